"""Fine-tuning a (tiny) transformers CLIPModel with AdamW and transformers' linear warm-up/decay schedule. I
passed the number of epochs as `num_training_steps` but call `scheduler.step()` after every batch, so the
learning rate reaches 0 after a handful of batches and the CLIP loss stays near ln(B) for the rest of the
run, with no error or warning.
Thread(s): huggingface/transformers#26827 ("the learning rate is 0 after half of args.max_train_steps" -
the schedule counted a different number of steps than the loop ran); deepset-ai/FARM#46 ("this will
result in LR = 0 for the last few steps ... Please set 't_total' correctly"). Fix: num_training_steps =
epochs * batches per epoch (the number of times the scheduler is stepped).
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; mean loss of the last 12 steps): fault 4.280
/ 4.182 / 4.241 (at or above chance: the lr is 0 from step 4 on) vs ln(64) = 4.159; fixed 2.670 / 2.238 /
2.758.
Ground truth: lr_schedule.
"""
import torch
from common import clip_loss, image_caption_pairs, tiny_clip
from transformers import get_linear_schedule_with_warmup

THREADS = ("huggingface/transformers#26827", "deepset-ai/FARM#46")
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 64
EPOCHS = 4


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    model = tiny_clip(seed)
    pixels, input_ids = image_caption_pairs(1024, seed)
    batches_per_epoch = -(-steps // EPOCHS)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    total = EPOCHS * batches_per_epoch if fixed else EPOCHS
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=1, num_training_steps=total)

    gen = torch.Generator().manual_seed(seed)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        for epoch in range(EPOCHS):
            order = torch.randperm(len(pixels), generator=gen)
            for b in range(batches_per_epoch):
                if step >= steps:
                    break
                idx = order[b * BATCH:(b + 1) * BATCH]
                out = model(input_ids=input_ids[idx], pixel_values=pixels[idx])
                loss = clip_loss(out.logits_per_image)
                loss.backward()
                w.observe(step, losses={"clip": loss},
                          embeddings={"image": out.image_embeds, "text": out.text_embeds},
                          logits=out.logits_per_image, batch_size=BATCH, inputs=pixels[idx])
                opt.step()
                sched.step()
                opt.zero_grad()
                step += 1


if __name__ == "__main__":
    import sys, diagnose; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + __import__("pathlib").Path(__file__).stem, **kw))
