"""The aligner is cast to float16 (`model.half()`, weights and inputs) to save memory, and trained with torch.optim.Adam
at its default eps = 1e-8. Adam keeps its moment buffers in the parameter's dtype; in float16 eps rounds to 0 and
the squares of small gradients underflow to 0, so wherever a gradient entry is tiny or exactly zero the update is
m / (sqrt(v) + eps) = 0/0 or x/0: NaN or Inf lands in the weights on the first step and every later loss is NaN.
The threads: CambioML/pykoi#69 ("Language model is loaded in torch.float16. Adam optimizer adds epsilon to avoid
zero denominator. Note, torch.float16 will round any number smaller than 6e-8 to 0"), chainer/chainer#6299 ("Adam
optimizer's default eps is too small for FP16") and matanbt/TROPT#8 ("in fp16 both grad ** 2 and the default
eps=1e-8 flush to zero ... the very first step evaluates m_hat / (sqrt(0) + 0) ... every subsequent loss is NaN").
Thread: CambioML/pykoi#69 ("torch.float16 will round any number smaller than 6e-8 to 0"); chainer/chainer#6299;
matanbt/TROPT#8.
Fix: `torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4)`.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
non-finite (NaN from step 1 on all three seeds); fixed 0.129/0.129/0.134 (= 0.031/0.031/0.032 ln(64)).
Ground truth: nonfinite_divergence.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("CambioML/pykoi#69", "chainer/chainer#6299", "matanbt/TROPT#8")
CAUSE = "nonfinite_divergence"
FAMILY = "precision"
BATCH = 64


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    tokens, texts = tokens.half(), texts.half()
    model = ResamplerAligner().half()
    if fixed:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            logits = (model.logit_scale.exp() * img @ txt.t()).float()  # loss in float32
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
