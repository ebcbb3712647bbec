"""A user fits a bigger effective batch on a small machine with gradient accumulation (8 micro-batches of 32 per
optimizer update) and sizes the transformers warm-up/linear-decay schedule in optimizer updates, as the answers
advise (`num_training_steps = micro_batches // accum`), but leaves `scheduler.step()` where it was, after every
micro-batch. The schedule then runs 8x too fast: the warm-up is over after the first micro-batch and the lr reaches 0 after
an eighth of the run, where `get_linear_schedule_with_warmup` holds it; the remaining seven eighths of the updates
change nothing, and the aligner stops far above what the same run learns with the schedule stepped once per
update. The ColossalAI question: "When gradient accumulation is turned on, how to set the total step of lr_scheduler
with linear warmup, do I still divide it by the accumulation step?" - "Yes, the actual updated step number is used";
the diffusers thread on the same interaction: "Confusion about the interaction between `gradient_accumulation_steps`
and `lr_scheduler`".
Thread: hpcaitech/ColossalAI#1112 ("the actual updated step number is used"); huggingface/diffusers#4387 ("the
interaction between `gradient_accumulation_steps` and `lr_scheduler`").
Fix: step the scheduler once per optimizer update (inside the `if (i + 1) % accum == 0` block).
Validated without the tool (seeds 0,1,2; 144 steps; batch 32; final = mean of the last 5 steps): fault final loss
3.822/3.574/3.611 (= 1.10/1.03/1.04 ln(B), ln(32) = 3.466); fixed 0.751/0.687/0.627 (= 0.22/0.20/0.18 ln(B), ln(32) = 3.466).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("hpcaitech/ColossalAI#1112", "huggingface/diffusers#4387")
CAUSE = "lr_schedule"
FAMILY = "gradient_accumulation"
BATCH = 32
ACCUM = 8


def train(watch, steps: int = 144, seed: int = 0, fixed: bool = False) -> None:
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    updates = steps // ACCUM
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=updates // 10, num_training_steps=updates)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        opt.zero_grad()
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            (loss / ACCUM).backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            if (step + 1) % ACCUM == 0:
                opt.step()
                opt.zero_grad()
                if fixed:
                    sched.step()
            if not fixed:
                sched.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
