"""A StepLR written for epochs (step_size = epochs // 2, gamma = 0.1) is stepped inside the batch loop, so
the learning rate is cut 10x every 5 *batches* instead of every 5 epochs: after ~15 optimizer steps the lr is
1e-6 of its start and the resampler aligner never leaves chance. Users find it only by printing the lr.
Thread: leftthomas/SRGAN#94 ("learning rate scheduler is used with parameter `step_size=epochs // 2` and
`gamma=0.1` ... they are called at each training step which means that learning rate is quickly becoming zero
after a few training steps"); pytorch/vision#1261 ("`train_one_epoch` also calls the scheduler after each
image ... `lr_scheduler` is being called twice").
Fix: call `sched.step()` once per epoch (after the batch loop), not after every batch.
Validated without the tool (seeds 0,1,2; 120 steps; batch 64; final = mean of the last 5 steps): fault final loss
2.4204/3.3853/3.3895 (= 0.582/0.814/0.815 ln(B), ln(B) = 4.1589); fixed 0.1506/0.1424/0.1625 (= 0.036/0.034/0.039 ln(B), ln(B) = 4.1589).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from torch.utils.data import DataLoader, TensorDataset
from common import ResamplerAligner, token_pairs, clip_loss

THREADS = ("leftthomas/SRGAN#94", "pytorch/vision#1261")
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 64
EPOCHS = 10


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(768, seed=seed)
    loader = DataLoader(TensorDataset(tokens, texts), batch_size=BATCH, shuffle=True, drop_last=True)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=EPOCHS // 2, gamma=0.1)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        for epoch in range(EPOCHS):
            for tok, txt_in in loader:
                if step >= steps:
                    break
                img, txt = model(tok, txt_in)
                scale = model.logit_scale.exp()
                logits = scale * img @ txt.t()
                loss = clip_loss(logits)
                opt.zero_grad(); loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, extras={"logit_scale": scale.detach()})
                opt.step()
                if not fixed:
                    sched.step()  # BUG: the epoch scheduler advanced on every batch
                step += 1
            if fixed:
                sched.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
