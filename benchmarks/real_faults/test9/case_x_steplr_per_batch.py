"""StepLR configured in epochs but stepped in the batch loop. The user copies a "decay the lr by 0.1 every 3
epochs" recipe (StepLR(step_size=3, gamma=0.1)) into a loop whose `scheduler.step()` sits next to `opt.step()`,
so the decay happens every 3 *iterations*: after ~10 batches the lr of the projector/resampler is 1e-6 and
below, and the contrastive loss freezes near ln(B). Same question as in the public thread: "according to the
paper the step decay ... is every 3 epochs ... Otherwise, wouldn't the learning rate become almost negligible?"
Thread: hukenovs/hagrid#12 ("the step decay for the detection experiment is every 3 epochs ... wouldn't the
learning rate become almost negligible?").
Fix: call `sched.step()` once per epoch (after the batch loop), not after every batch.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
3.809/3.486/3.367 (= 0.92/0.84/0.81 ln(B), ln(64) = 4.1589); fixed 0.204/0.206/0.192 (= 0.049/0.050/0.046 ln(B)).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, token_pairs, clip_loss

THREADS = ("hukenovs/hagrid#12",)
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 64


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.1)  # "decay 0.1 every 3 epochs"
    per_epoch = len(tokens) // BATCH
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        for epoch in range(steps // per_epoch + 1):
            perm = torch.randperm(len(tokens))
            for b in range(per_epoch):
                if step >= steps:
                    break
                idx = perm[b * BATCH:(b + 1) * BATCH]
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                opt.zero_grad(); loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, inputs=tokens[idx])
                opt.step()
                if not fixed:
                    sched.step()  # BUG: inside the batch loop
                step += 1
            if fixed:
                sched.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
