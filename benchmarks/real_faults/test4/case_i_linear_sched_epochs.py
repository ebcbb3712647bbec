"""A linear warm-up/decay schedule whose horizon is the number of epochs, stepped once per batch: the lr
reaches zero after a handful of optimizer steps and the aligner never learns. The user builds
`get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=EPOCHS)` and steps it every batch
(Lightning's `interval="step"`), as in the report "Schedulers don't work": `num_training_steps=self.trainer.max_epochs`
with `lr_scheduler=dict(scheduler=scheduler, interval="step", frequency=1)`, where the maintainer answers "You set the
num training steps to max_epochs but the interval for scheduling to "step". Is this intentional? This seems very
odd." and "This is likely the case if you accidentally set num_training_step to max_epochs". The same unit mismatch
is fixed in ScrollPrize/villa ("passes `max_steps=self.mgr.max_epoch`, but ... [they] are stepped once per optimizer
step ... The horizon is therefore short by however many steps an epoch takes"). Mechanism: transformers' linear
lambda is s / warmup, then max(0, (T - s) / (T - warmup)) with T = 6: the lr is 0 at step 0, 5e-4 at step 1, 1e-3
at step 2, 7.5e-4, 5e-4, 2.5e-4, then exactly 0 from step 6 on, for 90 of the 96 steps (16 batches x 6 epochs): five
non-zero AdamW steps are all the model ever gets.
Thread: Lightning-AI/pytorch-lightning#18570 ("You set the num training steps to max_epochs but the interval for
scheduling to "step""); ScrollPrize/villa#1495 ("Fix per-iteration LR schedulers being given an epoch count as their
horizon").
Fix: `num_training_steps=EPOCHS * len(loader)` (the horizon in optimizer steps).
Validated without the tool (seeds 0,1,2; 96 steps; batch 64; final = mean of the last 5 steps): fault final loss
3.943/3.683/3.679 (= 0.948/0.886/0.885 ln(64)); fixed 0.190/0.217/0.195 (= 0.046/0.052/0.047 ln(64)).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from transformers import get_linear_schedule_with_warmup
from common import ResamplerAligner, token_pairs, clip_loss

THREADS = ("Lightning-AI/pytorch-lightning#18570", "ScrollPrize/villa#1495")
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 64
EPOCHS = 6
WARMUP = 2


def train(watch, steps: int = 96, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens, texts), batch_size=BATCH,
                                         shuffle=True, drop_last=True)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    total = EPOCHS * len(loader) if fixed else EPOCHS  # the bug: the horizon is the epoch count
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=WARMUP, num_training_steps=total)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        for epoch in range(EPOCHS):
            for tok, txt_in in loader:
                if step >= steps:
                    return
                img, txt = model(tok, txt_in)
                scale = model.logit_scale.exp()
                logits = scale * img @ txt.t()
                loss = clip_loss(logits)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=len(img), inputs=tok, extras={"logit_scale": scale.detach()})
                opt.step()
                sched.step()  # once per batch ("interval": "step")
                step += 1


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
