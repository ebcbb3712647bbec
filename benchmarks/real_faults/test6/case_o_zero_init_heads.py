"""Both projection heads zero-initialised. The user adds an `_init_weights` that zero-inits the two new
projection heads (weight and bias), the way biaffine / classifier heads are often started from zeros, so
that "training starts from a neutral head". In a two-tower contrastive model there is no label to break
the tie: every image and every caption embedding is the zero vector, F.normalize leaves it at zero, all
logits are 0 and the loss is exactly ln(B); the gradient reaching each image row is a logit-weighted sum of
the (zero) caption rows and vice versa, so every parameter, the resampler behind the head and the logit
scale included, gets an exactly zero gradient on every step and nothing ever moves.
In a parser the same init was questioned ("using all zeros is quite strange to me, doesn't it map every
input vector to a zero vector, and accumulate zero gradients?") and defended because "gold dependencies
can back propagate 1 gradients to Biaffine layers and help get rid of zero init quickly"
(yzhangcs/parser#100): with a contrastive loss between two zero heads nothing back-propagates. "Must
initialize weights. Otherwise there are no gradients for any networks with a hidden layer!"
(davharris/mistnet#87).
Thread: yzhangcs/parser#100 ("doesn't it map every input vector to a zero vector, and accumulate zero
gradients?"); davharris/mistnet#87 ("Otherwise there are no gradients for any networks with a hidden layer!").
Fix: drop the zero init of the heads (keep nn.Linear's default init).
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.1589/4.1589/4.1589 (= 1.000 ln(64): exactly chance on every step); fixed
0.1687/0.1632/0.1735 (= 0.041/0.039/0.042 ln(64)).
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from torch import nn
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("yzhangcs/parser#100", "davharris/mistnet#87")
CAUSE = "no_gradient_path"
FAMILY = "initialisation"
BATCH = 64


class Aligner(ResamplerAligner):
    def __init__(self, zero_heads: bool = True):
        super().__init__()
        if zero_heads:
            self._init_weights()

    def _init_weights(self):
        for head in (self.proj, self.text):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = Aligner(zero_heads=not fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=len(img), inputs=tokens[idx], targets=torch.arange(len(img)))
            opt.step()
            opt.zero_grad()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
