"""Gradient accumulation (micro-batch 32, 8 micro-batches per optimizer step) with a warm-up + linear-decay
LambdaLR sized in optimizer steps; `sched.step()` sits inside the micro-batch loop, so the schedule advances 8x
per optimizer step: the warm-up is over after less than one optimizer step and the learning rate reaches 0 at
optimizer step ~8 of 60. The rest of the run trains at lr 0 and the loss stays where it was left.
Threads: huggingface/pytorch-image-models#1235 ("Cosine decay schedule changes with different
accumulate_grad_batches values ... For the accumulate_grad_batches = 4, the LR decayed faster"; "if you use the per
step lr update it'll change with the number of steps"); ludwig-ai/ludwig#3555 ("Fix interaction between
scheduler.step() and gradient accumulation steps").
Fix: call `sched.step()` once per optimizer step (after `opt.step()`), not per micro-batch.
Validated without the tool (seeds 0,1,2; 60 optimizer steps of 8 micro-batches; batch (logit rows) 32; final =
mean of the last 5 steps): fault final loss 1.883/1.792/1.667 (= 0.543/0.517/0.481 ln(32), ln(32) = 3.466);
fixed 0.121/0.148/0.132 (= 0.035/0.043/0.038 ln(32)).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, token_pairs, clip_loss

THREADS = ("huggingface/pytorch-image-models#1235", "ludwig-ai/ludwig#3555")
CAUSE = "lr_schedule"
FAMILY = "gradient_accumulation"
MICRO = 32      # what fits in memory
ACCUM = 8       # effective batch 256
BATCH = MICRO   # rows (and candidates) of each logit matrix


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    warmup, total = 6, steps  # in optimizer steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / (total - warmup))))
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            opt.zero_grad()
            running = 0.0
            for micro in range(ACCUM):
                idx = torch.randint(0, len(tokens), (MICRO,), generator=g)
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                (loss / ACCUM).backward()
                running += loss.detach() / ACCUM
                if not fixed:
                    sched.step()          # the bug: the scheduler advances on every micro-batch
            w.observe(step, losses={"clip": running}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=len(img), inputs=tokens[idx])
            opt.step()
            if fixed:
                sched.step()              # the fix: one scheduler step per optimizer step


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
