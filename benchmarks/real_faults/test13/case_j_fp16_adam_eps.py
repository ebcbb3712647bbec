"""A user halves an aligner to save memory (`model.half()`, inputs cast to fp16) and keeps the optimizer line they
had in fp32: `torch.optim.Adam(model.parameters(), lr=1e-3)`, default eps=1e-8. The Adam state lives in the
parameters' dtype, so eps is rounded to 0 in fp16 and the second-moment estimate of small gradients underflows to 0
as well: the update `exp_avg / (sqrt(exp_avg_sq) + eps)` divides by zero for those entries, writes inf/NaN into the
weights within a few steps, and every loss after that is NaN. The forum thread: "I've been running into the sudden
appearance of NaNs when I attempt to train using Adam and Half (float16) precision ... they train just fine with
single precision (float32) and Adam"; the answer: "Have you tried using a much larger eps (say 1e-4)? The default
1e-8 is rounded to 0 in half precision."; the EDSR maintainer on the same report: "ADAM optimizer does not work well
with half-precision".
Thread: discuss.pytorch.org/t/adam-half-precision-nans/1765 ("The default 1e-8 is rounded to 0 in half precision");
sanghyun-son/EDSR-PyTorch#36 ("ADAM optimizer does not work well with half-precision").
Fix: the thread's fix, a larger Adam eps (`eps=1e-4`), nothing else.
Validated without the tool (seeds 0,1,2; 60 steps; batch 32; final = mean of the last 5 steps): fault final loss NaN/NaN/NaN (non-finite from step 1/1/1 on); fixed 0.165/0.154/0.172 (= 0.05/0.04/0.05 ln(B), ln(32) = 3.466).
Ground truth: nonfinite_divergence.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("discuss.pytorch.org/t/adam-half-precision-nans/1765", "sanghyun-son/EDSR-PyTorch#36")
CAUSE = "nonfinite_divergence"
FAMILY = "precision"
BATCH = 32


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    tokens, texts = tokens.half(), texts.half()               # fp16 inputs for the fp16 model
    model = ResamplerAligner().half()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4 if fixed else 1e-8)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits.float())
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
