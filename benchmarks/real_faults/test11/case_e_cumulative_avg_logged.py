"""A user trains a small CLIP (transformers CLIPModel, `return_loss=True`) and reports to the dashboard, and to the
watch, the "average loss" the progress bar shows: `running_loss += loss.item()` every step and `running_loss /
(step + 1)`, the tutorial's print with the reset line dropped, i.e. the mean since the start of training rather than
the loss of the step. The model learns normally, but the logged curve carries the first steps' chance-level values
forever: it decays like 1/step and reads about 2.5 times the real loss at the end, so the run looks stuck well above
where it is. The same misreading is reported for the cifar10 tutorial's print ("`running_loss` is accumulated over
2000 iterations ... This feels wrong unless you delete the next line that resets running_loss") and for Ludwig's
epoch loss ("causing the epoch eval loss to show a cumulative average instead of the average at each epoch").
Thread: pytorch/tutorials#2058 ("print(f'... loss: {running_loss / (i + 1):.3f}') ... This feels wrong unless you
delete the next line that resets running_loss"); ludwig-ai/ludwig#1659 ("MeanMetric instances do not reset their
running average ... show a cumulative average").
Fix: log the step's own loss (losses={"clip": loss}) instead of the cumulative average.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
2.259/2.087/2.305 (= 0.54/0.50/0.55 ln(B), ln(64) = 4.159); fixed 0.961/0.807/0.905 (= 0.231/0.194/0.217 ln(B)).
Ground truth: logging_misstates_loss.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import image_caption_pairs, tiny_clip

THREADS = ("pytorch/tutorials#2058", "ludwig-ai/ludwig#1659")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"
BATCH = 64


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(1024, seed=seed)
    model = tiny_clip(seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed)
    running_loss = 0.0
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randperm(len(ids), generator=g)[:BATCH]
            out = model(input_ids=ids[idx], pixel_values=pixels[idx], return_loss=True)
            loss = out.loss
            opt.zero_grad(); loss.backward()
            running_loss += loss.item()
            avg_loss = running_loss / (step + 1)  # what the progress bar shows
            w.observe(step, losses={"clip": loss if fixed else avg_loss},
                      embeddings={"image": out.image_embeds, "text": out.text_embeds},
                      logits=out.logits_per_image, batch_size=BATCH)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
