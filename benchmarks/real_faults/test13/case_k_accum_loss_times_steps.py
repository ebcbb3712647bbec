"""A user fine-tunes a CLIP model with gradient accumulation (micro-batches of 32, 4 of them per optimizer step) and
logs the training loss the way a multi-task Trainer subclass they copied does: each micro-batch's loss is divided by
the accumulation steps for backward, the divided values are summed over the window, and the logged figure is then
multiplied by the accumulation steps "to undo the division" once more. The sum already undid it, so the logged loss
is the SUM of the four micro-batch losses, four times the objective. Training itself is fine (the gradients are the
mean over the window), but the curve the user watches sits near or above ln(32) = 3.47 and they conclude the model is
stuck at chance. The thread: "What also confused me is that my two loss components add up to n and the total loss to
something much bigger (e.g. n*4 when using 4 accumulation steps). - It took me a bit to figure out where the
missmatch is coming from."
Thread: zipzou/hf-multitask-trainer#7 ("Why multiply by the amount of gradient accumulation steps?"; "the total loss
to something much bigger (e.g. n*4 when using 4 accumulation steps)").
Fix: log the mean over the accumulation window (the summed scaled losses, without multiplying by the steps again).
Validated without the tool (seeds 0,1,2; 60 optimizer steps of 4 micro-batches; batch 32; final = mean of the last 5
steps): fault final loss 4.345/3.330/4.158 (= 1.25/0.96/1.20 ln(B), ln(32) = 3.466); fixed 1.086/0.833/1.039 (=
0.31/0.24/0.30 ln(B), ln(32) = 3.466).
Ground truth: logging_misstates_loss.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import image_caption_pairs, tiny_clip

THREADS = ("zipzou/hf-multitask-trainer#7",)
CAUSE = "logging_misstates_loss"
FAMILY = "logging"
BATCH = 32
ACCUM = 4


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, input_ids = image_caption_pairs(1024, seed=seed)
    model = tiny_clip(seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            tr_loss = 0.0
            for _ in range(ACCUM):
                idx = torch.randint(0, len(pixels), (BATCH,), generator=g)
                out = model(input_ids=input_ids[idx], pixel_values=pixels[idx], return_loss=True)
                loss = out.loss / ACCUM
                loss.backward()
                tr_loss = tr_loss + loss.detach()
            logged = tr_loss if fixed else tr_loss * ACCUM      # "undo" the division a second time
            w.observe(step, losses={"clip": logged}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                      logits=out.logits_per_image, batch_size=BATCH, inputs=pixels[idx].flatten(1),
                      extras={"logit_scale": model.logit_scale.exp()})
            opt.step()
            opt.zero_grad()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
