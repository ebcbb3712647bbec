"""A user fine-tunes a CLIPModel the way the transformers contrastive-image-text example does (`return_loss=True`,
per-device batch 32) with gradient accumulation over 4 micro-batches, on the Trainer's loop of transformers 4.46.
Each micro-batch's loss is divided by the accumulation steps for backward, but the value added to the logged
`tr_loss` is the undivided one: the reported loss of an optimizer step is the sum of its 4 micro-batch losses,
4x the objective. Training itself is fine; the logged curve sits near ln(32) and reads as "not learning" (and
doubles or quadruples whenever gradient_accumulation_steps is raised).
Thread: huggingface/transformers#35204 ("currently logged loss doesn't divide gradient accumulation steps, so it
will be bigger than expected"); also huggingface/transformers#35207 ("the loss for `gradient_accumulation_steps=2`
is errornously doubled").
Fix: log the mean over the accumulation micro-batches (add `loss / gradient_accumulation_steps` to `tr_loss`).
Validated without the tool (seeds 0,1,2; 100 optimizer steps of 4 micro-batches; batch 32; final = mean of the
last 5 steps): fault final logged loss 2.965/3.228/1.978 (= 0.86/0.93/0.57 ln(B), ln 32 = 3.466; 4x the objective);
fixed 0.741/0.807/0.494 (= 0.21/0.23/0.14 ln(B)).
Ground truth: logging_misstates_loss.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import image_caption_pairs, tiny_clip

THREADS = ("huggingface/transformers#35204", "huggingface/transformers#35207")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"
BATCH = 32
ACCUM = 4  # gradient_accumulation_steps


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(2048, seed=seed)
    model = tiny_clip(seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(ids), generator=g)
    per_epoch = len(ids) // BATCH
    micro = 0
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            tr_loss = torch.zeros(())
            opt.zero_grad()
            for _ in range(ACCUM):
                if micro and micro % per_epoch == 0:
                    order = torch.randperm(len(ids), generator=g)
                idx = order[(micro % per_epoch) * BATCH:(micro % per_epoch + 1) * BATCH]
                micro += 1
                out = model(input_ids=ids[idx], pixel_values=pixels[idx], return_loss=True)
                (out.loss / ACCUM).backward()
                tr_loss_step = out.loss.detach() / ACCUM if fixed else out.loss.detach()
                tr_loss = tr_loss + tr_loss_step
            w.observe(step, losses={"clip": tr_loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                      logits=out.logits_per_image, batch_size=BATCH, inputs=pixels[idx],
                      extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
