"""Gradient accumulation with a hand-written loop: the linear-decay LambdaLR is sized in optimizer
updates (`total = steps`), but `sched.step()` sits inside the micro-batch loop next to `backward()`, so the schedule
advances ACCUM=4 times per update and the learning rate reaches 0 after a quarter of the run; the remaining updates
move nothing and the loss stalls far above where the same run ends with the scheduler stepped per update. The
accelerate threads: "during gradient accumulation the scheduler is stepped as though gradient accumulation doesn't
exist, and the scheduler length should be adjusted based on the gradient accumulation'd fraction" (#1170), and the
AcceleratedScheduler exists "to avoid making a scheduler step too fast when ... step was skipped because of gradient
accumulation" (#500).
Thread: huggingface/accelerate#1170 ("the scheduler is stepped as though gradient accumulation doesn't exist");
huggingface/accelerate#500 ("avoid making a scheduler step too fast").
Fix: call `sched.step()` once per `opt.step()` (after it), not once per micro-batch.
Validated without the tool (seeds 0,1,2; 30 optimizer steps = 120 observed micro-batch steps; micro-batch 32, the
logits are 32x32; final = mean of the last 5 steps): fault final loss 2.9546/2.7325/2.6614 (= 0.85/0.79/0.77 ln(32));
fixed 0.7202/0.6506/0.6121 (0.21/0.19/0.18 ln(32)).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, token_pairs, clip_loss

THREADS = ("huggingface/accelerate#1170", "huggingface/accelerate#500")
CAUSE = "lr_schedule"
FAMILY = "gradient_accumulation"
BATCH = 32          # micro-batch: the logits of each forward are (32, 32)
ACCUM = 4


def train(watch, steps: int = 30, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    total = steps  # optimizer updates
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / total))
    micro = 0
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            opt.zero_grad()
            for k in range(ACCUM):
                idx = torch.randint(0, len(tokens), (BATCH,))
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                (loss / ACCUM).backward()
                w.observe(micro, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH)
                micro += 1
                if not fixed:
                    sched.step()      # the bug: stepped on every micro-batch
            opt.step()
            if fixed:
                sched.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
