"""Image and text features concatenated before one all_gather, then split as if the gathered tensor were
[all images; all texts]: on more than one rank every "positive" pairs two unrelated samples.

What the user did: a 4-rank data-parallel alignment run (perceiver-pytorch Perceiver over frozen patch
tokens, mean over latents, projection; text MLP; 16 pairs per rank, 64 in the global batch) with the global
CLIP loss (every rank scores the whole 64 x 64 matrix, open_clip's default `local_loss=False`). To save one
collective the user concatenated the two feature matrices per rank, `feats = cat([img, txt])`, gathered that
with a gradient-carrying all_gather, and split the result in two halves: `all_img, all_txt =
all_feats.chunk(2)`. With one rank this is exactly right, and that is how it was tested.

What went wrong and why: all_gather stacks rank by rank, so the gathered tensor is [img_0; txt_0; img_1;
txt_1; img_2; txt_2; img_3; txt_3], not [img_0..img_3; txt_0..txt_3]. The first half holds the images *and
texts* of ranks 0-1, the second half those of ranks 2-3, and the diagonal target i pairs img_0[i] with
img_2[i], txt_0[i] with txt_2[i], and so on: no target points at a sample's own caption, and the sample's
real caption is not even among the columns of its row. The loss asks the model to match unrelated samples
that change every step; all it can learn is that an image row's target is some image column and a text row's
some text column, which takes it from ln(64) to about ln(32) and no further. Here the four ranks are run in
one process (the rank-ordered concatenation is what the autograd all_gather returns); DDP keeps the replicas
identical, so one model and one backward of the global loss give the same update.

Threads: Spijkervet/SimCLR#37 ("Multi GPU support is ... ornamental?": with world_size > 1 NT_Xent "doesn't
learn a meaningful representation"; "There must be a subtle issue in concatenating z_i and z_j before
gathering and then masking" -- the loss assumes the gathered batch is laid out as all z_i then all z_j; the
user's rewrite gathers in the layout the loss indexes and "produces good representations for both single-
and multi- GPU").

Fix (fixed=True): gather the image and the text features separately (`all_img = gather(img)`,
`all_txt = gather(txt)`), so row i of both matrices is the same pair.

Validation (validate.py --half test26, seeds 0/1/2, candidates = 4 x 16 = 64, ln(64) = 4.1589):
fault final / ln(64) = 0.8442 / 0.8473 / 0.8393 (final 3.51 / 3.52 / 3.49, ~ln(32)); fixed 0.0416 / 0.0430 /
0.0394.

Ground truth: wrong_targets.
"""

from __future__ import annotations

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("Spijkervet/SimCLR#37",)
CAUSE = "wrong_targets"
FAMILY = "distributed"

WORLD = 4
B = 16  # pairs per rank


def gather(per_rank: list[torch.Tensor]) -> torch.Tensor:
    """torch.distributed.nn.all_gather + cat: every rank's tensor, in rank order, gradient kept."""
    return torch.cat(per_rank, dim=0)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed + 1)
    session = watch(model, optimizer, batch_size=B)

    for step in range(steps):
        idx = torch.randint(0, len(tokens), (WORLD * B,), generator=g)
        shards = idx.view(WORLD, B)  # DistributedSampler: rank r gets shards[r]
        imgs, txts = [], []
        for rank in range(WORLD):
            img, txt = model(tokens[shards[rank]], texts[shards[rank]])
            imgs.append(img)
            txts.append(txt)

        if fixed:
            all_img, all_txt = gather(imgs), gather(txts)
        else:
            feats = [torch.cat([i, t], dim=0) for i, t in zip(imgs, txts)]  # one collective, not two
            all_feats = gather(feats)
            all_img, all_txt = all_feats.chunk(2, dim=0)

        logits = model.logit_scale.exp() * all_img @ all_txt.t()  # global loss, (64, 64) on every rank
        loss = clip_loss(logits)

        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": all_img, "text": all_txt},
                        logits=logits, batch_size=B, candidates=WORLD * B, inputs=tokens[shards[0]])
        optimizer.step()
    session.close()
