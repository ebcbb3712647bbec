"""A user trains a small transformers CLIPModel with gradient accumulation (8 micro-batches of 32 pairs per
optimizer step, each micro-batch its own contrastive problem). They backpropagate `loss / ACCUM` correctly,
but the number they log is the running sum of the micro-batch losses, never divided by ACCUM. Their
dashboard shows a CLIP loss that starts near 35 and ends above ln(32), so they conclude the model
"does not learn" and start tuning the temperature and lr, while the contrastive loss actually optimised (the
mean over micro-batches) has fallen far below chance. The logged value scales with the accumulation count.
Thread: huggingface/transformers#35204 ("currently logged loss doesn't divide gradient accumulation steps, so it will be bigger than expected"); agokrani/distillKitPlus#5 ("This causes my reported loss to scale linearly with gradient_accumulation_steps")
Fix: log the mean over the micro-batches: `logged = running / ACCUM`.
Validated without the tool (seeds 0,1,2; 60 optimizer steps x 8 micro-batches; batch 32; final = mean of the last 5 steps): fault logged final loss 6.28/4.23/4.08 (= 1.81/1.22/1.18 ln(B)), while the loss really optimised is the fixed run's; fixed (logged = true mean) 0.79/0.53/0.51 (= 0.23/0.15/0.15 ln(B)).
Ground truth: logging_misstates_loss.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch

from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("huggingface/transformers#35204", "agokrani/distillKitPlus#5")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"
BATCH = 32  # pairs per micro-batch: the candidates each row is scored against
ACCUM = 8


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(1024, seed=seed)
    g = torch.Generator().manual_seed(seed)
    model = tiny_clip(seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            opt.zero_grad()
            running = 0.0
            order = torch.randperm(len(ids), generator=g)[:ACCUM * BATCH].view(ACCUM, BATCH)
            for micro in order:
                out = model(input_ids=ids[micro], pixel_values=pixels[micro])
                logits = out.logits_per_image
                loss = clip_loss(logits)
                (loss / ACCUM).backward()
                running = running + loss.detach()
            if fixed:
                logged = running / ACCUM
            else:
                logged = running  # the bug: the sum over micro-batches is logged as the step's loss
            w.observe(step, losses={"clip": logged}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                      logits=logits, batch_size=BATCH, inputs=pixels[micro],
                      extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
