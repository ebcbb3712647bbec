"""A learnable "background" text embedding created with `torch.empty` and never initialised: NaN from step 0.

What the user did: STALE-style vision-language matching. Each clip's visual embedding (patch tokens from a frozen
backbone through a flamingo-pytorch PerceiverResampler, mean-pooled, projected) is scored against the batch's
caption embeddings plus one learnable background embedding appended as an extra text row,
`nn.Parameter(torch.empty(1, E))`; text rows are L2-normalised with `text / text.norm(dim=-1, keepdim=True)` and
the cosine logits scaled by a learnable logit scale. Loss: image->text cross-entropy over the B captions + the
background row, and text->image cross-entropy over the B clips. The script turns on
`torch.use_deterministic_algorithms(True)` for reproducible runs.

What went wrong and why: `torch.empty` allocates without initialising, and nothing ever initialises the
background row. Its contents are whatever the memory held: in the thread it trained on some runs and failed with
NaN on others (a zero row makes `text / text.norm()` 0/0; garbage can be inf/NaN). With deterministic algorithms
on, PyTorch fills uninitialised memory with NaN (`torch.utils.deterministic.fill_uninitialized_memory`, True by
default), so here the failure is certain: the background row is NaN, its logit column is NaN, the
image->text cross-entropy of every row is NaN, and the first backward writes NaN into every gradient; after the
first optimizer step all weights are NaN.

Thread: sauradip/STALE#16 ("RuntimeError: Function 'DivBackward0' returned nan values": traced to
`self.bg_embeddings = nn.Parameter(torch.empty(1, 512))`, memory left as it was, which "could also explain why
the code works sometimes and not others"; fixed by initialising it, e.g. `kaiming_uniform_`; the reporter
confirms over several runs and the author agrees: "You can initialize anything").

The fix (the thread's): `nn.init.kaiming_uniform_(self.bg_embeddings, nonlinearity='relu')` after creating it.

Validation (benchmarks/real_faults/validate.py --half test24, seeds 0 1 2, final loss / ln(B + 1), 33
candidates per image): fault non-finite on all three seeds (first non-finite loss at step 0), fixed
0.0405 / 0.0395 / 0.0295.

Ground truth: nonfinite_divergence.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, D, E, token_pairs

THREADS = ("sauradip/STALE#16",)
CAUSE = "nonfinite_divergence"
FAMILY = "initialisation"

B = 32


class ClipTextMatcher(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.proj = nn.Linear(D, E)
        self.text = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.bg_embeddings = nn.Parameter(torch.empty(1, E))
        if fixed:
            nn.init.kaiming_uniform_(self.bg_embeddings, nonlinearity="relu")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, captions):
        visual = self.proj(self.resampler(tokens.unsqueeze(1))[:, 0].mean(1))
        visual = visual / visual.norm(dim=-1, keepdim=True)
        text = torch.cat([self.text(captions), self.bg_embeddings], dim=0)  # (B + 1, E): captions + background
        text = text / text.norm(dim=-1, keepdim=True)
        return visual, text


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # the user's "reproducible runs" setting
    try:
        torch.manual_seed(seed)
        tokens, captions = token_pairs(2048, seed)
        model = ClipTextMatcher(fixed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(seed)
        session = watch(model, optimizer, batch_size=B)
        labels = torch.arange(B)
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=g)
            visual, text = model(tokens[idx], captions[idx])
            logits = model.logit_scale.exp() * visual @ text.t()  # (B, B + 1)
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, :B].t(), labels))
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": visual, "text": text[:B]},
                            logits=logits, targets=labels, candidates=B + 1)
            optimizer.step()
        session.close()
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
