"""Gradient accumulation written by hand around a transformers CLIPModel (tiny config, random weights): each
micro-batch loss is divided by the accumulation count for backward (the gradients are right), but the value the
user logs is the running sum of the undivided micro-batch losses, `tr_loss += loss.detach()`, never divided by the
count. The logged CLIP loss is ACCUM x the objective: with 8 micro-batches it reads several times ln(B) at the
start and stays far above what the model actually reaches, so the run looks stuck while it learns. The same bug in
the HF Trainer: "currently logged loss doesn't divide gradient accumulation steps, so it will be bigger than
expected" (huggingface/transformers#35204), and in a distillation trainer: "the scalar loss being logged ... is
summed across all batches without adjusting for the number of accumulation steps. This causes my reported loss to
scale linearly with gradient_accumulation_steps (loss jumps 6 -> 26 when going from 8 -> 32 steps)"
(agokrani/distillKitPlus#5).
Thread: huggingface/transformers#35204 ("logged loss is not correct with gradient accumulation");
agokrani/distillKitPlus#5.
Fix: log `tr_loss / ACCUM` (the mean over the micro-batches).
Validated without the tool (seeds 0,1,2; 60 steps of 8 micro-batches; batch 16; final = mean of the last 5 steps):
fault final logged loss 6.0500/4.6955/5.6122 (= 2.182/1.694/2.024 x ln(16) = 2.7726); fixed 0.7562/0.5869/0.7015
(= 0.273/0.212/0.253 x ln(16) = 2.7726).
Ground truth: logging_misstates_loss.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("huggingface/transformers#35204", "agokrani/distillKitPlus#5")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"
BATCH = 16   # micro-batch: the rows each contrastive loss scores against
ACCUM = 8    # micro-batches per optimizer step


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(1024, seed)
    model = tiny_clip(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            tr_loss = 0.0
            opt.zero_grad()
            for micro in range(ACCUM):
                idx = torch.randint(0, len(pixels), (BATCH,))
                out = model(input_ids=ids[idx], pixel_values=pixels[idx])
                logits = out.logits_per_image
                loss = clip_loss(logits)
                (loss / ACCUM).backward()
                tr_loss += loss.detach()
            logged = tr_loss / ACCUM if fixed else tr_loss
            w.observe(step, losses={"clip": logged}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                      logits=logits, batch_size=BATCH)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
