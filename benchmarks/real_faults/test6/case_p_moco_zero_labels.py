"""A user fine-tuning a CLIP model copies the InfoNCE loss from a MoCo-style codebase, where the logits are
`cat([l_pos, l_neg])` and the positive always sits in column 0, so the targets are `torch.zeros(B)`. In a
CLIP in-batch logit matrix the positive of row i is column i, but the zeros labels come along unchanged:
every image is told its caption is the batch's first caption (and every caption that its image is the
first image). With a shuffled loader the first item is a random one, so the best the model can do is
hold the loss near ln(B); it sits at chance while the user keeps tuning the learning rate.
Thread: salesforce/CoST#11 ("labels = torch.zeros(logits.shape[0], dtype=torch.long) ... We let the 0-th
index be the positive label, thus the use of torch.zeros"); nikheelpandey/TAUP-PyTorch#6 ("I can't
understand why the accordingly labels for positives is still 0"): the zeros convention only holds when the
positive is concatenated in front, not for a B x B similarity matrix.
Fix: `labels = torch.arange(BATCH)` (the positive of row i is column i).
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final
loss 3.5456/3.5303/3.4268 (= 1.023/1.019/0.989 x ln(32) = 3.4657); fixed 1.0538/1.0785/1.0610 (= 0.304/0.311/0.306 x ln(32) = 3.4657).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import image_caption_pairs, tiny_clip

THREADS = ("salesforce/CoST#11", "nikheelpandey/TAUP-PyTorch#6")
CAUSE = "wrong_targets"
FAMILY = "data_labels"
BATCH = 32


def info_nce(logits, labels):
    # symmetric InfoNCE, as in the codebase the loss was copied from
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(1024, seed)
    model = tiny_clip(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(ids), (BATCH,), generator=g)
            out = model(input_ids=ids[idx], pixel_values=pixels[idx])
            logits = out.logits_per_image
            if fixed:
                labels = torch.arange(BATCH)
            else:
                labels = torch.zeros(BATCH, dtype=torch.long)  # positive key indicators: first column
            loss = info_nce(logits, labels)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                      logits=logits, targets=labels, batch_size=BATCH, inputs=pixels[idx].flatten(1),
                      extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
