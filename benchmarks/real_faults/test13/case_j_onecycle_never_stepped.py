"""A user trains an aligner with a 1cycle schedule (`OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps)`) and,
as the accelerate docs show, hands the scheduler to `accelerator.prepare` and calls `lr_scheduler.step()` after every
`optimizer.step()`. In accelerate 0.10-0.12 the prepared scheduler's `step()` guarded the OneCycle case with a check
written backwards (`if total_steps < last_epoch: scheduler.step()`), so the wrapped OneCycleLR is never stepped: the
lr stays at the value OneCycleLR sets at construction, max_lr / div_factor = 4e-5, for the whole run, the warm-up to
1e-3 never happens, and the loss stays far short of learning. Reproduced with the wrapper's guard as it shipped (the
rest of accelerate plays no part on one CPU process). The issue: "In my tests, the step function of the scheduler is
never called inside the accelerated scheduler wrapper"; the fix PR: "Turns out the logic for one-cycle on the
scheduler was backwards so `step` was never called."
Thread: huggingface/accelerate#690 ("the step function of the scheduler is never called"); huggingface/accelerate#728
("the logic for one-cycle on the scheduler was backwards").
Fix: the PR's corrected guard (step the OneCycleLR while `last_epoch < total_steps`).
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss 2.895/2.740/2.826 (= 0.84/0.79/0.82 ln(B), ln(32) = 3.466); fixed 0.169/0.182/0.179 (= 0.05/0.05/0.05 ln(B), ln(32) = 3.466).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("huggingface/accelerate#690", "huggingface/accelerate#728")
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 32


class PreparedScheduler:
    """accelerate's AcceleratedScheduler.step as of 0.10-0.12 (one process), reduced to the OneCycle guard."""

    def __init__(self, scheduler, fixed=False):
        self.scheduler, self.fixed = scheduler, fixed

    def step(self, *args, **kwargs):
        total = getattr(self.scheduler, "total_steps", 0)
        if self.fixed:
            if self.scheduler.last_epoch < total:             # accelerate#728
                self.scheduler.step(*args, **kwargs)
        elif total < self.scheduler.last_epoch:               # accelerate#385, backwards: never true
            self.scheduler.step(*args, **kwargs)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    lr_scheduler = PreparedScheduler(torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps),
                                     fixed=fixed)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()
            lr_scheduler.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
