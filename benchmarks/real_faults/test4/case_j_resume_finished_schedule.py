"""Continuing from the last checkpoint of a finished run restores a schedule that is already over. A first job
aligned the resampler on a source set with a linear warm-up/decay schedule (transformers'
get_linear_schedule_with_warmup) that ends at lr 0 on its last step, and saved model, optimizer and scheduler
state. The user then "resumes" from that checkpoint to train on new pairs with the usual resume code: build the
model, optimizer and a fresh scheduler for the new run's steps, then load all three state dicts. The scheduler's
state carries last_epoch = 80, past the new schedule's 60 steps, so every step of the new run has lr 0 (and the
optimizer's param group already says lr 0): the loss on the new pairs never moves from chance. Thread:
mosaicml/composer#1384 ("Let's say the run finishes. And now, I restart the run from the final checkpoint for
another 1500 batches. Will the learning rate be 0 the entire time, or will it restart ...?"; maintainer: "it
should stay at 0. We simply load up all the state (including the scheduler state), and continue training, as if
you had trained for 3000ba to begin with").
Thread: mosaicml/composer#1384.
Fix: do not load the finished run's scheduler state (drop `sched.load_state_dict(ckpt["scheduler"])`).
Validated without the tool (seeds 0,1,2; 60 steps after resuming; batch 64; final = mean of the last 5 steps): fault
final loss 8.9458/6.0682/8.2525 (= 2.151/1.459/1.984 ln(64): the source-trained model is confidently wrong on the
new pairs and never moves; lr 0.0 at steps 0, 1, 10 and 59); fixed 0.4253/0.3323/0.3803 (= 0.102/0.080/0.091
ln(64)).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import io
import torch
from transformers import get_linear_schedule_with_warmup
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("mosaicml/composer#1384",)
CAUSE = "lr_schedule"
FAMILY = "checkpoint_resume"
BATCH = 64
FIRST_RUN_STEPS = 80


def first_run(seed: int) -> io.BytesIO:
    """The finished job: 80 steps on the source pairs, warm-up then linear decay to 0; its last checkpoint."""
    tokens, texts = token_pairs(1024, seed=seed + 100)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=8, num_training_steps=FIRST_RUN_STEPS)
    for _ in range(FIRST_RUN_STEPS):
        idx = torch.randint(0, len(tokens), (BATCH,))
        img, txt = model(tokens[idx], texts[idx])
        loss = clip_loss(model.logit_scale.exp() * img @ txt.t())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, buf)
    buf.seek(0)
    return buf


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    ckpt = torch.load(first_run(seed))
    tokens, texts = token_pairs(1024, seed=seed)          # the new pairs
    model = ResamplerAligner()
    model.load_state_dict(ckpt["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=6, num_training_steps=steps)
    opt.load_state_dict(ckpt["optimizer"])
    if not fixed:
        sched.load_state_dict(ckpt["scheduler"])
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
            opt.step()
            sched.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
