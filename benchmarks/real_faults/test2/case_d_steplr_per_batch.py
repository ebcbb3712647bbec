"""A StepLR meant to drop the lr every `EPOCHS // 2` epochs is stepped inside the batch loop, so it drops
every 2 *batches*: by step 10 the lr is 1e-5 of its start and the Perceiver aligner stops moving while
its loss is still high. Threads: Lornatang/SRGAN-PyTorch#1 ("they are called at each training step which
means that learning rate is quickly becoming zero after a few training steps. The SRGAN does not seem to
train"), pytorch/pytorch#3814 ("Scheduler should step after the end of each epoch, not after every
iteration"). The fix: call `sched.step()` once per epoch, after the batch loop.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64): fault final loss (mean of the last 5 steps)
4.22/4.53/4.16 vs ln(64) = 4.159 (5.17/5.87/5.48 at step 0); fixed 0.54/0.62/0.52.
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import PerceiverAligner, clip_loss, token_pairs
from torch.utils.data import DataLoader, TensorDataset

THREADS = ("Lornatang/SRGAN-PyTorch#1", "pytorch/pytorch#3814")
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 64
EPOCHS = 4


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    loader = DataLoader(TensorDataset(tokens, texts), batch_size=BATCH, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=EPOCHS // 2, gamma=0.1)  # "every 2 epochs"
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        for epoch in range(EPOCHS):
            for tok, txt in loader:
                if step >= steps:
                    break
                img, cap = model(tok, txt)
                logits = model.logit_scale.exp() * img @ cap.t()
                loss = clip_loss(logits)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": cap}, logits=logits,
                          batch_size=BATCH, inputs=tok)
                opt.step()
                if not fixed:
                    sched.step()  # the fault: per batch
                step += 1
            if fixed:
                sched.step()  # the fix: per epoch


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
