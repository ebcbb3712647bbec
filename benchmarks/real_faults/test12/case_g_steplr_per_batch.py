"""An epoch-level StepLR stepped inside the batch loop. The user configures "decay the lr by 0.7 every epoch"
(StepLR(step_size=1, gamma=0.7)) and calls scheduler.step() right after optimizer.step() in the mini-batch loop,
so the decay happens every batch: after 20 batches the lr is 0.7^20 = 8e-4 of its start, and the resampler
aligner stops moving long before it has learned the pairs; the loss freezes near chance. Thread
hazdzz/stgcn#18 ("It seems that the position of \"scheduler.step()\" is error in main.py, which leads to the
learning-rate decrese too fast" ... reply: "I believe the scheduler.step() should be outside the mini-batch loop,
as you set the step_size = 10").
Fix: call scheduler.step() once per epoch (after the batch loop), not after every batch.
Validated without the tool (seeds 0,1,2; 90 steps; batch 64; final = mean of the last 5 steps): fault final loss
3.684/3.413/3.366 (= 0.89/0.82/0.81 ln(B), ln(64) = 4.1589); fixed 0.193/0.235/0.208 (= 0.046/0.057/0.050 ln(B)).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("hazdzz/stgcn#18",)
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 64


def train(watch, steps: int = 90, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)  # "0.7x per epoch"
    per_epoch = len(tokens) // BATCH
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            perm = torch.randperm(len(tokens))
            for i in range(per_epoch):
                if step >= steps:
                    break
                idx = perm[i * BATCH:(i + 1) * BATCH]
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                opt.zero_grad(); loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp()})
                opt.step()
                if not fixed:
                    sched.step()  # BUG: epoch scheduler stepped every batch
                step += 1
            if fixed:
                sched.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
