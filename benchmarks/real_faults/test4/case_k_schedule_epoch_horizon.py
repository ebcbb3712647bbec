"""A user adds the usual warm-up + linear decay (`transformers.get_linear_schedule_with_warmup`) to a
resampler aligner and steps it after every optimizer step, as the Hugging Face examples do, but builds it with
the horizon counted in epochs (`num_warmup_steps=1, num_training_steps=EPOCHS`) instead of optimizer steps
(`EPOCHS * len(loader)`). Stepped per batch, the multiplier is 0 on the first batch, 1 on the second and
back at 0 after EPOCHS = 6 steps; the linear schedule clamps it at 0 from there on, so after the first few batches the lr is exactly 0
and the aligner never trains, with no warning. Public threads: ScrollPrize/villa#1495 ("`_get_scheduler`
passes `max_steps=self.mgr.max_epoch`, but `onecycle`, `cyclic`, `cosine_warmup` and `diffusers_cosine_warmup`
are stepped once per optimizer step ... The horizon is therefore short by however many steps an epoch takes");
crowsonkb/k-diffusion#50 (maintainer: "The LR scheduler in train.py is being used in the per step mode rather
than per epoch, which means the warmup and decay are expressed in terms of numbers of steps rather than numbers
of epochs").
Thread: ScrollPrize/villa#1495; crowsonkb/k-diffusion#50.
Fix: `num_training_steps=EPOCHS * len(loader)` (and the warm-up in steps, `len(loader)`).
Validated without the tool (seeds 0,1,2; 6 epochs x 16 = 96 steps; batch 64; final = mean of the last 5
steps): fault final loss 3.939/3.610/3.615 (= 0.947/0.868/0.869 ln(64)); fixed 0.231/0.253/0.213 (= 0.055/0.061/0.051 ln(64)).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from torch.utils.data import DataLoader, TensorDataset
from transformers import get_linear_schedule_with_warmup
from common import ResamplerAligner, token_pairs, clip_loss

THREADS = ("ScrollPrize/villa#1495", "crowsonkb/k-diffusion#50")
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 64
EPOCHS = 6


def train(watch, steps: int = 96, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    loader = DataLoader(TensorDataset(tokens, texts), batch_size=BATCH, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    if fixed:
        sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=len(loader),
                                                num_training_steps=EPOCHS * len(loader))
    else:
        sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=1, num_training_steps=EPOCHS)  # the bug
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        for epoch in range(EPOCHS):
            for tok, txt_feat in loader:
                if step >= steps:
                    return
                img, txt = model(tok, txt_feat)
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH)
                opt.step()
                sched.step()
                step += 1


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
