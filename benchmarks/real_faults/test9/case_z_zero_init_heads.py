"""A user borrows the "zero-initialise the last layer" trick (zero_module / patch_out in diffusion code, so a
new block starts as a no-op) for both projection heads of a CLIP-style aligner: a `zero_module`-style loop
zeroing the weight and bias of the last Linear of the image head and of the text head. In a contrastive
loss this is a dead start: every image and text embedding is the zero vector (F.normalize of zero), every
logit is 0, and the gradient reaching each head is (p_ij - 1[i=j]) times the OTHER tower's embedding, i.e.
exactly zero for both heads and for the logit scale; Adam and AdamW move nothing (a zero gradient gives a
zero step, decay of zero is zero). The loss sits at exactly ln(B) from step 0. (With only the weights
zeroed, float noise in the uniform softmax is enough for Adam to break the symmetry and the run learns.)
The threads ask the same question about zero-initialised output layers:
"does it mean all the network outputs will be zero" / "makes the output of Conv2dZeros always zero. Why is
it wanted ... since training will not change zeros init?" (there a regression target breaks the
symmetry; a contrastive loss between two zeroed heads has none).
Thread: crowsonkb/k-diffusion#113 ("Why zero initialize patch_out ... It makes output zero in beginning");
ksw0306/FloWaveNet#9 ("Since the weight and bias are initialized to exactly zeros, will the output of the
`ZeroConv1d` always be zeros?"); chaiyujin/glow-pytorch#12.
Fix: keep PyTorch's default init of the heads' last layers (drop the zero_module loop).
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final
loss 4.1589/4.1589/4.1589 (= 1.000 ln(64), flat from step 0); fixed 0.1754/0.1646/0.1757 (0.042/0.040/0.042
ln(64)).
Ground truth: embedding_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import token_pairs, clip_loss, D, DT, E

THREADS = ("crowsonkb/k-diffusion#113", "ksw0306/FloWaveNet#9", "chaiyujin/glow-pytorch#12")
CAUSE = "embedding_collapse"
FAMILY = "initialisation"
BATCH = 64


class Aligner(nn.Module):
    def __init__(self, fixed=False):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.text = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        for head in (self.image, self.text):
            if not fixed:
                for p in head[-1].parameters():          # zero_module(): start each head as a "no-op"
                    nn.init.zeros_(p)

    def forward(self, tokens, texts):
        return F.normalize(self.image(tokens.mean(1)), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = Aligner(fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            x, t = tokens[idx], texts[idx]
            img, txt = model(x, t)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=x)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
