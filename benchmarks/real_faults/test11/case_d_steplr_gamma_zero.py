"""StepLR with gamma=0 as the "scheduler off" setting. The training script builds its StepLR from a config flag, and
the branch meant to turn the schedule off passes gamma=0 instead of gamma=1; the scheduler is still stepped once per
epoch, so after the first step_size epochs every param group's lr is multiplied by 0 and stays there. The loss stops
where it was at that point (here a few steps into training, still near chance) and never moves again: no error, the
optimizer keeps stepping with lr 0. LINCellularNeuroscience/VAME#26: "When the 'scheduler' parameter is turned off,
the learning rate decreases to 0 after 100 epochs ... with optimizer_scheduler deactivated, gamma should be 1, not 0";
the maintainer: "You are absolutely right, this is a bug we need to fix". Here the
epochs are short (4 steps) and step_size is 2 epochs, so lr is 0 from step 8 on.
Thread: LINCellularNeuroscience/VAME#26 ("with optimizer_scheduler deactivated, gamma should be 1, not 0").
Fix: StepLR(..., gamma=1) in the scheduler-off branch.
Validated without the tool (seeds 0,1,2; 100 steps; batch 128; final = mean of the last 5 steps): fault final loss
4.532/4.729/3.787 (= 0.93/0.97/0.78 ln(128)); fixed 0.326/0.301/0.311 (= 0.07/0.06/0.06 ln(128)).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("LINCellularNeuroscience/VAME#26",)
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 128
USE_SCHEDULER = False  # the config flag: "no lr schedule" for this run


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(512, seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
    if USE_SCHEDULER:
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.2)
    else:
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=1.0 if fixed else 0.0)
    per_epoch = len(tokens) // BATCH
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        for epoch in range(steps // per_epoch):
            perm = torch.randperm(len(tokens))
            for b in range(per_epoch):
                idx = perm[b * BATCH:(b + 1) * BATCH]
                img, txt = model(tokens[idx], texts[idx])
                scale = model.logit_scale.exp()
                logits = scale * img @ txt.t()
                loss = clip_loss(logits)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, extras={"logit_scale": scale.detach()})
                opt.step()
                step += 1
            sched.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
