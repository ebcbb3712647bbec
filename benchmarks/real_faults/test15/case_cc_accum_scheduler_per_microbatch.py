"""Gradient accumulation in a hand-written CLIP loop: 8 micro-batches of 32 pairs per optimizer step, a
transformers linear warm-up/decay schedule sized in optimizer steps (`num_training_steps=steps`), but
`scheduler.step()` sits inside the micro-batch loop next to `backward()`. The schedule runs 8x too fast:
the warm-up ends within the first optimizer step and the learning rate is 0 after 1/8 of the run, so the
loss flattens early, far above where the same run ends when the scheduler steps once per update.

Thread: Lightning-AI/pytorch-lightning#1476 ("warmups of say 16000 steps would actually only warm up for 1000 steps if I set accumulate_grad_batches=16")
Thread: starVLA/starVLA#210 ("lr_scheduler.step() is called on every micro-batch ... causes the LR scheduler to advance gradient_accumulation_steps times faster")
Fix: move `scheduler.step()` out of the micro-batch loop, after `opt.step()`.
Validated without the tool (seeds 0,1,2; 60 steps; batch 32; final = mean of the last 5 steps): fault final loss 5.103/3.475/3.336 (= 1.47/1.00/0.96 ln(B)); fixed 1.139/0.683/0.566 (= 0.33/0.20/0.16 ln(B)).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from transformers import get_linear_schedule_with_warmup

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("Lightning-AI/pytorch-lightning#1476", "starVLA/starVLA#210")
CAUSE = "lr_schedule"
FAMILY = "gradient_accumulation"
BATCH = 32  # micro-batch: the candidates each row is scored against
ACCUM = 8


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(4096, seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.1)
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=6, num_training_steps=steps)

    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            opt.zero_grad()
            total = 0.0
            for micro in range(ACCUM):
                i = torch.randint(0, len(tokens), (BATCH,), generator=g)
                img, txt = model(tokens[i], texts[i])
                scale = model.logit_scale.exp()
                logits = scale * img @ txt.t()
                loss = clip_loss(logits)
                (loss / ACCUM).backward()
                total = total + loss.detach() / ACCUM
                if not fixed:
                    sched.step()  # the bug: the schedule advances once per micro-batch
            w.observe(step, losses={"clip": total}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[i], extras={"logit_scale": scale})
            opt.step()
            if fixed:
                sched.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
