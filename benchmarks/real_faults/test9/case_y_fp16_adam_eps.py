"""A user casts the whole aligner to fp16 (`model.half()`, no fp32 master weights) to save memory and keeps
torch.optim.Adam's default eps=1e-8. In fp16 1e-8 is below the smallest subnormal (~6e-8) and rounds to zero,
and the squares of small gradients underflow too, so Adam's denominator sqrt(v) + eps is 0 for some entries:
the first update writes inf/NaN into the weights and the loss is NaN from the next step on. The threads: "One
trick is to check for the `epsilon` value which is normally set to `1e-8` or `1e-7`, those values being
unrepresentable in FP16"; "I've tried `float32` and there is no nan issue ... `float16` will not work without
carefully scaling the values".
Thread: suvojit-0x55aa/mixed-precision-pytorch#2 ("FP16 suffers from numerical instability when small updates are
taking place. Adam has few such updates that makes it more unstable"); karpathy/nanoGPT#167 ("Loss becomes nan",
dtype = 'float16').
Fix: `torch.optim.Adam(..., eps=1e-4)`.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; final = mean of the last 5 steps): fault loss
non-finite from step 1 on every seed (final NaN); fixed 0.212/0.216/0.205 (= 0.051/0.052/0.049 ln(64)).
Ground truth: nonfinite_divergence.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("suvojit-0x55aa/mixed-precision-pytorch#2", "karpathy/nanoGPT#167")
CAUSE = "nonfinite_divergence"
FAMILY = "precision"
BATCH = 64


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    tokens, texts = tokens.half(), texts.half()
    model = ResamplerAligner().half()  # "pure fp16" to halve memory, no fp32 master copy
    eps = 1e-4 if fixed else 1e-8  # 1e-8 is below the smallest fp16 subnormal (6e-8): it rounds to 0
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=eps)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits.float())
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
