"""Every rank seeds its sampler with the same constant, so all ranks draw the same pairs and the
gathered contrastive batch is made of copies.

What the user did: a data-parallel alignment job (a flamingo-pytorch Perceiver resampler over frozen
patch tokens, a text projection, the CLIP loss) on 8 ranks with 2 pairs per rank, features all-gathered
with gradient (`torch.distributed.nn.all_gather`) so that every image is scored against the 16 captions
of the global batch. Each rank builds its own sampler with `np.random.default_rng(4321)` -- the same
constant on every process, as the benchmark scripts in the thread did with `np.random.seed(4321)`.

What went wrong and why: with one seed everywhere, every rank reads the *same* records at every step
(the maintainer's finding in the thread: "if we run four processes on the same machine, we get all of
them to read the same TF records"). In a contrastive loss over the gathered batch that is not only
wasted compute: each of the 2 distinct pairs appears 8 times among the 16 candidates, so each image
row holds 8 identical captions of which only one is labelled positive, and each caption row 8 identical
images. No model can put more than 1/8 of the softmax on the labelled copy, so the loss is floored at
ln(8) of ln(16): the run sits at 0.75 x chance however well it aligns, and each step sees 2 pairs
instead of 16.

Thread: horovod/horovod#173 ("workers located at same host converge better than workers at different
hosts"): the maintainer traced it to `np.random.seed(4321)` / `tf.set_random_seed(...)` being the same
on every process, so the workers of a host read identical records, and fixed it by making the seed
depend on the rank (`4321 + hvd.rank()`); training then matched the expected curve.

Fix (fixed=True): seed each rank's sampler with `4321 + rank`, so the ranks draw different pairs and
the 16 gathered candidates are 16 distinct pairs.

Here the 8 ranks of the torchrun job are emulated in one process: each rank's own sampler and local
batch, the all_gather with gradient (a concatenation), and one shared model standing for the DDP
replicas, which DDP keeps identical. The watch sees rank 0's view: the gathered embeddings and the
16 x 16 logits, candidates=16.

Validation (validate.py, 100 steps, final loss = mean of the last 5 / ln(16) = 2.7726):
  fault: seed 0 2.0855 (0.752), seed 1 2.0971 (0.756), seed 2 2.1545 (0.777)   (floor ln 8 = 2.0794)
  fixed: seed 0 0.0471 (0.017), seed 1 0.0732 (0.026), seed 2 0.0662 (0.024)

Ground truth: false_negatives.
"""

from __future__ import annotations

import numpy as np
import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("horovod/horovod#173",)
CAUSE = "false_negatives"
FAMILY = "batch and candidates"

WORLD = 8  # ranks of the job
LOCAL_BATCH = 2  # pairs per rank
DATA_SEED = 4321  # the constant the training script seeds its sampler with


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    n = len(tokens)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)

    # one sampler per rank process; the bug: the same seed on every rank
    samplers = [np.random.default_rng(DATA_SEED + seed * 1000 + (rank if fixed else 0)) for rank in range(WORLD)]

    def all_gather(parts):  # torch.distributed.nn.all_gather + torch.cat: keeps the gradient
        return torch.cat(parts, dim=0)

    global_batch = WORLD * LOCAL_BATCH
    session = watch(model, optimizer, batch_size=global_batch)
    for step in range(steps):
        local_idx = [torch.from_numpy(s.choice(n, LOCAL_BATCH, replace=False)) for s in samplers]
        local_img, local_txt = [], []
        for idx in local_idx:  # each rank encodes its own local batch
            img, txt = model(tokens[idx], texts[idx])
            local_img.append(img)
            local_txt.append(txt)
        all_img, all_txt = all_gather(local_img), all_gather(local_txt)
        logits = model.logit_scale.exp() * all_img @ all_txt.t()  # (16, 16) over the gathered batch
        loss = clip_loss(logits)

        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": all_img, "text": all_txt},
                        logits=logits, batch_size=global_batch, candidates=global_batch,
                        inputs=tokens[torch.cat(local_idx)])
        optimizer.step()
    session.close()
