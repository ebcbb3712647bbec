"""Whole model cast to float16 with model.half() (to fit larger images / batches) and trained with the stock Adam.
Adam's default eps=1e-8 is below the smallest float16 subnormal (6e-8) and rounds to 0 inside the update, and the
squared gradients of the small adapter gradients underflow to 0 in exp_avg_sq: the denominator of the update is
exactly 0 for those entries, the step is inf, and the weights turn inf/NaN after the first few optimizer steps; the
loss is NaN from there on. wgcban/ChangeFormer#91: "After setting HalfTensor in order to trained 1024*1024 images,
the G_loss of the model is nan ... the 'losing nan' problem may be caused by Adam with half-precision ... from
torch.cuda.amp import autocast, GradScaler ... After the modification, 'loss nan' problem is solved".
kohya-ss/sd-scripts#430: "full_fp16 training + Dadaption gives loss=nan".
Thread: wgcban/ChangeFormer#91 ("the 'losing nan' problem may be caused by Adam with half-precision");
kohya-ss/sd-scripts#430 ("full_fp16 training ... gives loss=nan").
Fix: keep the weights in float32 (no model.half(): dtype = torch.float32), as autocast + GradScaler would.
Validated without the tool (seeds 0,1,2; 60 steps; batch 128; final = mean of the last 5 steps): fault final loss
NaN on all 3 seeds (first non-finite loss at step 1/1/1); fixed 0.330/0.356/0.306 (= 0.07/0.07/0.06 ln(128)).
Ground truth: nonfinite_divergence.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("wgcban/ChangeFormer#91", "kohya-ss/sd-scripts#430")
CAUSE = "nonfinite_divergence"
FAMILY = "precision"
BATCH = 128


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    dtype = torch.float32 if fixed else torch.float16
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerAligner().to(dtype)          # model.half() on the fault run
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            tok, txt_in = tokens[idx].to(dtype), texts[idx].to(dtype)
            img, txt = model(tok, txt_in)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits.float())
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tok)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
