"""A temperature passed where the loss expects a multiplicative scale (inverse temperature): logits = 0.05 x cos.

What the user did: a mean-pooled MLP projector over frozen patch tokens and a linear text head, both
L2-normalised, trained with an in-batch-negatives loss they copied from sentence-transformers'
MultipleNegativesRankingLoss: `scores = cos_sim(a, b) * scale; loss = cross_entropy(scores, arange)`, made
symmetric. Their config says "temperature: 0.05" (the usual InfoNCE value), and they pass it as `scale=`.

The bug: `scale` multiplies the cosine similarities (MNRL's default 20 *is* 1/0.05); passing the temperature
there gives logits = 0.05 x cos in [-0.05, 0.05]. The softmax over the batch is almost uniform whatever the
embeddings do, the loss sits at ln(B) minus a few hundredths, and its gradient to the embeddings is ~400x
smaller than at the intended scale: the run looks "stuck at chance".

From the threads:
- huggingface/sentence-transformers#3054 (maintainer): "the `scale` is the inverse of the `temperature`, i.e.
  the scale of 20 corresponds to a temperature of 0.05."
- lightonai/pylate#115: the temperature had been dropped when the losses were copied from ST "because it is
  named \"scale\" and was actually a multiplicative scalar instead of being called temperature and dividing the
  similarities"; the PR adds a real temperature that divides.
- bowang-lab/BLEEP#5: the same temperature "used in two different manners. While logits are divided by it,
  targets are multiplied by this value" -- confirmed a mistake by the authors.

Thread: huggingface/sentence-transformers#3054
Thread: lightonai/pylate#115
Thread: bowang-lab/BLEEP#5
Fix: divide by the temperature (scale = 1 / 0.05 = 20), i.e. logits = cos / 0.05.

Validation (validate.py --half test17, seeds 0 1 2, B=64, ln(B)=4.1589, 150 steps, one CPU thread):
fault final loss 4.1106 / 4.1107 / 4.1106, final/ln(B) = 0.9884 on every seed (first step 4.157-4.159);
fixed final 0.0799 / 0.0920 / 0.0718, final/ln(B) = 0.0192 / 0.0221 / 0.0173. Under 1 s per run.

Ground truth: temperature.
"""

from __future__ import annotations

import pathlib
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from common import DT, D, E, token_pairs  # noqa: E402

THREADS = ("huggingface/sentence-transformers#3054", "lightonai/pylate#115", "bowang-lab/BLEEP#5")
CAUSE = "temperature"
FAMILY = "normalisation_temperature"

TEMPERATURE = 0.05  # the user's config value


class PooledProjector(nn.Module):
    """Frozen patch tokens -> mean over tokens -> 2-layer GELU MLP projector; text features -> linear head."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(D, 2 * E), nn.GELU(), nn.Linear(2 * E, E))
        self.text = nn.Linear(DT, E)

    def forward(self, tokens: torch.Tensor, texts: torch.Tensor):
        return F.normalize(self.proj(tokens.mean(1)), dim=-1), F.normalize(self.text(texts), dim=-1)


def in_batch_negatives_loss(a: torch.Tensor, b: torch.Tensor, scale: float = 20.0):
    """MultipleNegativesRankingLoss-style: cosine scores times `scale`, cross-entropy on the diagonal, both ways."""
    scores = (a @ b.t()) * scale
    labels = torch.arange(len(a))
    return 0.5 * (F.cross_entropy(scores, labels) + F.cross_entropy(scores.t(), labels)), scores


def train(watch, steps: int = 150, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = PooledProjector()
    B = 64
    scale = 1.0 / TEMPERATURE if fixed else TEMPERATURE  # fault: the temperature passed as the scale
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed + 100)
    with watch(model, opt, batch_size=B) as w:
        for step in range(steps):
            idx = torch.randperm(len(tokens), generator=g)[:B]
            img, txt = model(tokens[idx], texts[idx])
            loss, logits = in_batch_negatives_loss(img, txt, scale=scale)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=B, inputs=tokens[idx], extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose

    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
