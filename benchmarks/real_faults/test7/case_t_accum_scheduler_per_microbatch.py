"""Gradient accumulation (micro-batch 32, 4 micro-batches per optimizer step) with a linear warm-up/decay
schedule (transformers' get_linear_schedule_with_warmup) sized in optimizer steps (120 // 4 = 30), but
`sched.step()` is called on every micro-batch. The schedule runs 4x too fast: the lr peaks at micro-step 2, is
back at zero by micro-step 30 (optimizer step ~7) and stays at zero for the last 3/4 of the run, before the model
learned; the loss freezes well above the fixed run. "lr_scheduler.step() is called on every micro-batch inside
accelerator.accumulate(), but optimizer.step() is a no-op on non-sync micro-steps. This causes the LR scheduler to
advance gradient_accumulation_steps times faster than intended."
Thread: starVLA/starVLA#210 ("This causes the LR scheduler to advance gradient_accumulation_steps times faster than
intended"); sgl-project/SpecForge#364 ("The Learning Rate (LR) Scheduler currently steps based on `global_step`
without accounting for `gradient_accumulation`").
Fix: call `sched.step()` only after `opt.step()` (once per optimizer step).
Validated without the tool (seeds 0,1,2; 120 micro-steps = 30 optimizer steps; batch 32 per loss (each loss scores
32 candidates), lr 1e-3; final = mean of the last 5 steps): fault final loss 2.9850/3.3865/3.1876 (= 0.861/0.977/
0.920 ln(32)); fixed 0.7217/0.8250/0.7717 (0.208/0.238/0.223 ln(32)).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, token_pairs, clip_loss

THREADS = ("starVLA/starVLA#210", "sgl-project/SpecForge#364")
CAUSE = "lr_schedule"
FAMILY = "gradient_accumulation"
BATCH = 32          # micro-batch: each loss scores 32 candidates
ACCUM = 4           # effective batch 128 per optimizer step


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.img = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.txt = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.img(tokens.mean(1)), dim=-1), F.normalize(self.txt(texts), dim=-1)


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = Aligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    total = steps // ACCUM                                    # optimizer steps
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=total)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randperm(len(tokens))[:BATCH]
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            (loss / ACCUM).backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            if (step + 1) % ACCUM == 0:
                opt.step(); opt.zero_grad()
                if fixed:
                    sched.step()                              # the fix: one scheduler step per optimizer step
            if not fixed:
                sched.step()                                  # the bug: stepped on every micro-batch


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
