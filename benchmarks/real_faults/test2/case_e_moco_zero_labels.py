"""A CLIP fine-tune whose loss was ported from MoCo: `labels = torch.zeros(N, dtype=torch.long)`. In MoCo the
positive key sits in column 0 of an N x (1+K) matrix; in the CLIP N x N image-text matrix the positive of
row i is column i, so every image is trained toward the first caption of the batch (and every caption
toward the first image). Column 0 is a different random item in every batch, so there is nothing to
learn: the loss sits at ln(B) and the pairs are never pulled together. Threads: facebookresearch/moco#101 ("positive key indicators are always zeros, is this
okay?"), facebookresearch/moco#145 ("Why are labels set to all zeros when the first column of logits
represents positive similarity"), openai/CLIP#83 (`ground_truth = torch.arange(len(images))`). Fix: the
labels of an in-batch CLIP loss are torch.arange(N).
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; final = mean of the last 5 steps): fault
final loss 4.169/4.168/4.246 (diagonal CLIP loss of the same logits 4.173/4.163/4.177) vs ln(64) = 4.159;
fixed 1.951/1.985/1.191.
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from common import image_caption_pairs, tiny_clip

THREADS = ("facebookresearch/moco#101", "facebookresearch/moco#145", "openai/CLIP#83")
CAUSE = "wrong_targets"
FAMILY = "data_labels"
BATCH = 64


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    pixels, ids = image_caption_pairs(2048, seed)
    model = tiny_clip(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(ids), (BATCH,), generator=g)
            out = model(input_ids=ids[idx], pixel_values=pixels[idx])
            logits = out.logits_per_image
            labels = torch.arange(BATCH) if fixed else torch.zeros(BATCH, dtype=torch.long)
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                      logits=logits, targets=labels, batch_size=BATCH,
                      extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
