"""A user adds ReduceLROnPlateau to a CLIP-style aligner and copies the scheduler line from an accuracy-tracking
script, `ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=2)`, but feeds it the training loss each step. In
"max" mode the scheduler waits for the monitored value to rise; a loss that falls is "no improvement", so every
3 steps the lr is cut by 10: by step 15 it is 1e-8 and the aligner stops where it was, far above what it learns with
the intended schedule. The distiller issue: "only loss value is passed to the LR scheduler, but if the scheduler is
ReduceLROnPlateau with mode='max', it doesn't make sense to pass loss"; the fairseq report of the same mismatch: "In the
current setup, it is reducing `lr` as the training progresses."
Thread: IntelLabs/distiller#240 ("if the scheduler is ReduceLROnPlateau with mode='max', it doesn't make sense to pass
loss"); facebookresearch/fairseq#2205 ("it is reducing `lr` as the training progresses").
Fix: the mode that matches a loss, `mode="min"`.
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss
2.726/2.653/2.709 (= 0.79/0.77/0.78 ln(B), ln(32) = 3.466); fixed 0.283/0.299/0.481 (= 0.08/0.09/0.14 ln(B), ln(32) = 3.466).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("IntelLabs/distiller#240", "facebookresearch/fairseq#2205")
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min" if fixed else "max", factor=0.1, patience=2)
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
            sched.step(loss.item())


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
