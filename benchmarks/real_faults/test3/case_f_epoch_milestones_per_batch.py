"""Fine-tuning a (tiny) transformers CLIPModel with a MultiStepLR whose milestones are epochs, copied from a
reference recipe (`--lr-steps 16 22`, gamma 0.1), but `lr_scheduler.step()` is called inside the batch loop
next to `optimizer.step()`. The milestones are then counted in batches: the learning rate drops 10x after
16 batches and 100x after 22, i.e. in the second epoch, and the model stops moving long before it learned.
Threads: pytorch/vision#8629 ("The `lr_scheduler.step()` function should be called once per epoch, not every
step ... The `--lr-steps` argument provided to the `train.py` script don't make much sense: `[16, 22]`, because
these quickly change in the 2nd epoch and remain static for the rest of the training job");
automl/Auto-PyTorch#210 ("The scheduler was wrongly updating for batches instead of epochs");
aimagelab/meshed-memory-transformer#71 ("you call scheduler.step() per epoch, then also call scheduler.step()
per batch again. Is this your expected training strategy or an accidental mistake?").
Fix: call `sched.step()` once per epoch, after the batch loop.
Validated without the tool (seeds 0,1,2; 100 steps = 6.25 epochs of 16 batches; batch 64; final = mean of
the last 5 steps): fault final loss 3.514/3.546/3.683 (= 0.845/0.853/0.886 ln(64)); fixed 0.947/0.931/0.834
(= 0.228/0.224/0.201).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import image_caption_pairs, tiny_clip

THREADS = ("pytorch/vision#8629", "automl/Auto-PyTorch#210", "aimagelab/meshed-memory-transformer#71")
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 64
LR_STEPS = (16, 22)  # epochs, as in the recipe


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(1024, seed)
    model = tiny_clip(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(LR_STEPS), gamma=0.1)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:                                  # epochs
            order = torch.randperm(len(ids))
            for b in range(0, len(order) - BATCH + 1, BATCH):
                if step >= steps:
                    break
                idx = order[b:b + BATCH]
                out = model(input_ids=ids[idx], pixel_values=pixels[idx], return_loss=True)
                opt.zero_grad()
                out.loss.backward()
                w.observe(step, losses={"clip": out.loss},
                          embeddings={"image": out.image_embeds, "text": out.text_embeds},
                          logits=out.logits_per_image, batch_size=BATCH,
                          extras={"logit_scale": model.logit_scale.exp()})
                opt.step()
                if not fixed:
                    sched.step()                             # the bug: milestones are epochs
                step += 1
            if fixed:
                sched.step()                                 # the fix: once per epoch


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
