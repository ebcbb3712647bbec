"""Zero-initialised projection heads. Following the "zero-init the final layer" recipe (DiT's
`nn.init.constant_(self.final_layer.linear.weight, 0)` and the `zero_module(...)` output layers of diffusion
UNets), the user's `init_head` helper zeroes the weight and bias of both the image projection and the text
projection of a CLIP-style aligner. Both embeddings are then exactly zero, every logit is 0, and the gradient of
each head is proportional to the other side's embedding, which is zero: no parameter (heads, resampler, logit
scale) ever gets a non-zero gradient and the loss sits at exactly ln(B). Zero-init works for a residual output
feeding a regression loss; not for two towers that only meet in a product. The threads: "Initializing nn.Linear
weight with zeros"; "does it mean all the network outputs will be zero since the weights and biases of last
layer ... are all zeros?" ("yes ... at initialization"); "Is the zero initialization of weights in this
non-modulation linear layer intentional?".
Thread: facebookresearch/DiT#82 ("Clarification on Zero Initialization in FinalLayer"); atong01/conditional-flow-matching#134
("zero_module in UNet output"); pytorch/vision#6677.
Fix: `init_head` draws the weights from N(0, 0.02) instead of zeros.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss 4.1589/4.1589/4.1589 (= 1.000/1.000/1.000 ln(B), ln(64) = 4.1589); fixed 0.1067/0.1246/0.1165 (= 0.026/0.030/0.028 ln(B)).
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from torch import nn
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("facebookresearch/DiT#82", "atong01/conditional-flow-matching#134", "pytorch/vision#6677")
CAUSE = "no_gradient_path"
FAMILY = "initialisation"
BATCH = 64


def init_head(lin: nn.Linear, fixed: bool) -> None:
    if fixed:
        nn.init.normal_(lin.weight, std=0.02)
    else:
        nn.init.zeros_(lin.weight)  # BUG: "zero-init the output layer"
    nn.init.zeros_(lin.bias)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner(latents=8)
    init_head(model.proj, fixed)
    init_head(model.text, fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
