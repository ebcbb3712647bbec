"""A tiny transformers CLIPModel trained with a ReduceLROnPlateau(factor=0.1, patience=2) that a generic
training engine steps after every batch, as it does every scheduler, fed the batch's training loss. Patience is
counted in calls, so three batches in a row that do not beat the best single-batch loss so far (batch noise alone
does that) cut the lr 10x; after the first fast drop the noisy batch losses keep failing to beat the lucky best
batch and the lr goes 1e-3 -> 1e-4 -> ... -> 1e-8 within 20-25 batches (seed 0: cuts at steps 26, 34, 37, 40, 46;
seed 1: 30-49; seed 2: 31-55), long before the model has learned; the rest of the run trains at lr 1e-8.
Thread: abhishekkrthakur/wtfml#7 ("in the engine, scheduler is being called every (b_idx + 1) / self.acc_steps, that
is effectively every batch if acc_steps = 1 ... let's say I am using ReduceLROnPlateau which requires I pass a
metric in step"); pytorch/pytorch#2849 ("for `ReduceLROnPlateau`, `step` should probably be called at the end of the
epoch (after validation)").
Fix: step the plateau scheduler once per epoch on the epoch's mean loss instead of on every batch's loss.
Validated without the tool (seeds 0,1,2; 96 steps = 6 epochs of 16 batches; batch 64; final = mean of the last 5
steps): fault final loss 2.8187/2.8525/2.7444 (= 0.678/0.686/0.660 ln(64)); fixed 1.0820/1.0597/0.9650
(= 0.260/0.255/0.232 ln(64)).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import image_caption_pairs, tiny_clip

THREADS = ("abhishekkrthakur/wtfml#7", "pytorch/pytorch#2849")
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 64


def train(watch, steps: int = 96, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(1024, seed=seed)
    model = tiny_clip(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=2)
    per_epoch = len(pixels) // BATCH
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        for epoch in range(steps // per_epoch):
            perm, epoch_loss = torch.randperm(len(pixels)), 0.0
            for i in range(per_epoch):
                idx = perm[i * BATCH:(i + 1) * BATCH]
                out = model(input_ids=ids[idx], pixel_values=pixels[idx], return_loss=True)
                opt.zero_grad()
                out.loss.backward()
                w.observe(step, losses={"clip": out.loss},
                          embeddings={"image": out.image_embeds, "text": out.text_embeds},
                          logits=out.logits_per_image, batch_size=BATCH,
                          extras={"logit_scale": model.logit_scale.exp()})
                opt.step()
                epoch_loss += out.loss.item() / per_epoch
                if not fixed:
                    sched.step(out.loss.item())  # bug: the engine steps every scheduler on every batch
                step += 1
            if fixed:
                sched.step(epoch_loss)  # the fix: a plateau scheduler steps once per epoch


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
