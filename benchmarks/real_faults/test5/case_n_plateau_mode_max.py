"""ReduceLROnPlateau left in mode="max" while it is fed the loss. The scheduler config comes from a run that
monitored a recall/AUROC (higher is better); the loop now calls sched.step(mean loss) every 5 steps. In max mode a
falling loss never counts as an improvement, so every second check is "no improvement for patience=1 checks" and
the lr is cut 10x: 3e-4 for the first 15 steps, 3e-5 by step 25, 3e-6 by step 35, ... The schedule takes the
learning rate away exactly while the loss is falling fastest, and the run stalls far above the fixed run.
Threads: FunctionLab/selene#115 ("the learning rate scheduler in `TrainModel` reduces LR when the maximum loss is
not increased ... My guess is that the scheduler used to track AUROC, but the mode was not switched from `max` to
`min` when the scheduler was updated to track loss instead of AUROC."); Lightning-AI/pytorch-lightning#673
("Although the validation loss keeps decreasing, the lr scheduler seems to be decreasing the learning rate.").
Fix: ReduceLROnPlateau(opt, mode="min", ...) for a loss.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
3.178/2.879/2.861 (= 0.764/0.692/0.688 ln(64)); fixed 0.313/0.339/0.351 (= 0.075/0.081/0.084 ln(64)).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, token_pairs, clip_loss

THREADS = ("FunctionLab/selene#115", "Lightning-AI/pytorch-lightning#673")
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 64
EVAL_EVERY = 5


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    # config inherited from a run that tracked retrieval recall; now it is fed the loss
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min" if fixed else "max", factor=0.1, patience=1)
    window = []
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()
            window.append(loss.item())
            if (step + 1) % EVAL_EVERY == 0:
                sched.step(sum(window) / len(window))
                window = []


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
