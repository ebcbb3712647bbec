"""A user adds gradient accumulation (16 micro-batches of 32 per optimizer step) to an aligner trained with a linear
warm-up/decay schedule (`transformers.get_linear_schedule_with_warmup`, sized in optimizer steps:
num_training_steps = steps, 10% warm-up). The loop steps the scheduler after every micro-batch, not after each
`optimizer.step()`: the schedule runs 16x too fast, the warm-up ends inside the first update and the lr reaches 0
by optimizer step 4 of 60. Everything after that is an optimizer step with lr 0, so the loss freezes far short of
learning. The burn report names it: "The same loops call `learner.lr_step()` per microbatch rather than per
optimizer update. With an accumulation interval of `k`, ... non-constant schedules advance approximately `k` times
too quickly"; the dreambooth report: "Scheduler settle on training steps but work on accumulation steps."
Thread: tracel-ai/burn#5695 ("advances LR scheduler per microbatch"); d8ahazard/sd_dreambooth_extension#273
("Scheduler settle on training steps but work on accumulation steps").
Fix: step the scheduler once per optimizer update (after `optimizer.step()`), as the burn fix does.
Validated without the tool (seeds 0,1,2; 60 steps; batch 32; final = mean of the last 5 steps): fault final loss 3.999/3.634/3.600 (= 1.15/1.05/1.04 ln(B), ln(32) = 3.466); fixed 0.244/0.269/0.236 (= 0.07/0.08/0.07 ln(B), ln(32) = 3.466).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from transformers import get_linear_schedule_with_warmup
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("tracel-ai/burn#5695", "d8ahazard/sd_dreambooth_extension#273")
CAUSE = "lr_schedule"
FAMILY = "gradient_accumulation"
BATCH = 32          # micro-batch: the rows of each logit matrix
ACCUM = 16          # micro-batches per optimizer step


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(opt, num_warmup_steps=steps // 10, num_training_steps=steps)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            opt.zero_grad()
            total = 0.0
            for micro in range(ACCUM):
                idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
                img, txt = model(tokens[idx], texts[idx])
                scale = model.logit_scale.exp()
                logits = scale * img @ txt.t()
                loss = clip_loss(logits)
                (loss / ACCUM).backward()
                total = total + loss.detach() / ACCUM
                if not fixed:
                    scheduler.step()                          # every micro-batch: the schedule runs 16x too fast
            w.observe(step, losses={"clip": total}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()
            if fixed:
                scheduler.step()                              # once per optimizer update


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
