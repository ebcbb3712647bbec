"""The "total" loss the script logs is the last loss component left in the loop variable, not the sum
it backpropagates.

What the user did: Matryoshka-style alignment training (a flamingo-pytorch Perceiver resampler over
frozen patch tokens, a text projection, one CLIP loss per nested embedding size 32 / 16 / 8 / 4 / 2,
the objective their mean). The logging code copies yolact's: it rounds every component into `loss_info`
in a loop `for k in losses: ...` and then writes the total as `loss_info["T"] =
round(losses[k].item(), precision)` -- with `k` still holding the last key of the loop.

What went wrong and why: the logged total is the last component, the CLIP loss on the first 2
embedding dimensions, which on its own stays near half of chance (2 dimensions cannot separate a batch
of 32), while the objective -- the mean over the five nested sizes -- and the full-size CLIP loss keep
falling. The monitor's "total" therefore reads about 3x the objective it claims to be and 10x the
full-size loss: it tells the user the run is stuck at half of chance, and nothing about what is
optimised. Training itself is unaffected.

Thread: dbolya/yolact#254 ("A not important Bug"): `loss_info['T'] = round(losses[k].item(),
precision)` "you log the last loss item as Total loss"; the maintainer confirmed it ("Oops, thanks for
pointing that out! I'll push a fix shortly."): the logged total must be the loss that is optimised.

Fix (fixed=True): log the objective itself (`loss.item()`, the mean of the components) as the total.

Validation (validate.py reads the logged "total"; 100 steps, mean of the last 5 / ln(32) = 3.4657):
  fault (logged total = mrl_2): seed 0 1.8023 (0.520), seed 1 1.5541 (0.448), seed 2 1.6771 (0.484)
  fixed (logged total = the objective): seed 0 0.6434 (0.186), seed 1 0.5179 (0.149), seed 2 0.5209 (0.150)
  The two runs train identically; in the fault run the objective is the fixed run's figure and the
  full-size CLIP loss (mrl_32) is 0.1684 (0.049), 0.1674 (0.048), 0.1488 (0.043).

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("dbolya/yolact#254",)
CAUSE = "logging_misstates_loss"
FAMILY = "logging"

BATCH = 32
NESTED = (32, 16, 8, 4, 2)  # Matryoshka sizes; 32 is the full embedding
PRECISION = 4


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=BATCH)
    for step in range(steps):
        idx = torch.randperm(len(tokens), generator=g)[:BATCH]
        img_raw = model.encode_image(tokens[idx])
        txt_raw = model.text(texts[idx])
        scale = model.logit_scale.exp()

        losses = {}
        for d in NESTED:
            img_d, txt_d = F.normalize(img_raw[:, :d], dim=-1), F.normalize(txt_raw[:, :d], dim=-1)
            logits_d = scale * img_d @ txt_d.t()
            losses[f"mrl_{d}"] = clip_loss(logits_d)
            if d == NESTED[0]:
                img, txt, logits = img_d, txt_d, logits_d
        loss = sum(losses.values()) / len(losses)

        optimizer.zero_grad()
        loss.backward()

        loss_info = {}
        for k in losses:
            loss_info[k] = round(losses[k].item(), PRECISION)
        total = loss if fixed else losses[k]  # the bug: k is still the last key of the loop above
        loss_info["T"] = round(total.item(), PRECISION)
        session.observe(step, losses={"total": total.detach(), **{k: v.detach() for k, v in losses.items()}},
                        embeddings={"image": img, "text": txt}, logits=logits, batch_size=BATCH,
                        inputs=tokens[idx])
        optimizer.step()
    session.close()
