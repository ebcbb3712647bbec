"""A user fine-tunes an alignment head on a small domain set with few images and many captions each (the thread:
"on average 110 captions for each image"), flattened to one (image, caption) row per caption and sampled at random,
as in most CLIP fine-tuning scripts. With 32 images and a batch of 64, every image appears about twice in a batch,
so the symmetric InfoNCE scores the other captions of the same image (and the identical image rows) as negatives:
each duplicated row is asked to prefer one of two equally right answers, the loss is held above a floor it cannot
pass and the gradient pushes captions of the same image apart. The thread's workaround is to keep a caption's own
image's other captions out of its negatives ("I have created a dataset with a unique batch (all the image-text pairs
are unique in the same batch)").
Thread: openai/CLIP#323 ("As I have lots of captions for the same image (on average 110 captions for each image), I
have created a dataset with a unique batch").
Fix: mask the off-diagonal logits of rows that share an image id (same-image captions are no longer negatives).
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
0.917/0.902/0.897 (= 0.22/0.22/0.22 ln(B), ln(64) = 4.159); fixed 0.010/0.011/0.013 (= 0.002/0.003/0.003 ln(B)).
Ground truth: false_negatives.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, clip_loss, token_pairs

THREADS = ("openai/CLIP#323",)
CAUSE = "false_negatives"
FAMILY = "batch_candidates"
BATCH = 64
N_IMAGES, CAPTIONS = 32, 8


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.vision = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.text = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, caps):
        return F.normalize(self.vision(tokens.mean(1)), dim=-1), F.normalize(self.text(caps), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(N_IMAGES, seed=seed)
    g = torch.Generator().manual_seed(seed)
    # one row per caption: the image repeated, each caption a paraphrase (its image's text + wording noise)
    image_id = torch.arange(N_IMAGES).repeat_interleave(CAPTIONS)
    captions = texts[image_id] + 0.3 * torch.randn(len(image_id), DT, generator=g)
    model = Head()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randperm(len(image_id), generator=g)[:BATCH]
            ids = image_id[idx]
            img, txt = model(tokens[ids], captions[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            if fixed: logits = logits.masked_fill((ids[:, None] == ids[None, :]) & ~torch.eye(BATCH, dtype=torch.bool), float("-inf"))
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[ids], extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
