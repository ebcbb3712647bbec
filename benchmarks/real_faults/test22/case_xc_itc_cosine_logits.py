"""BLIP-2-style image-text contrastive (ITC) training on the retrieval head's raw cosine similarities:
no temperature, so the softmax over logits in [-1, 1] can never become confident.

What the user did: a Q-Former-style aligner (flamingo-pytorch PerceiverResampler as the query transformer
over frozen patch tokens, 8 learned queries, a vision projection; a text projection), written after
transformers' `Blip2ForImageTextRetrieval` ITC branch: both sides L2-normalised and
`logits_per_image = image_embeds @ text_embeds.t()` ("cosine similarity as logits"; the HF head takes
the max over the query tokens, this port the mean of the query outputs). The user fed these logits to the
symmetric cross-entropy, as the head's docstring calls them the image-text similarity score.

What went wrong and why: HF's converted BLIP-2 checkpoints have no temperature (the LAVIS `temp` parameter
is dropped by the conversion script), so the head's logits are bare cosines. A softmax over B values in
[-1, 1] is nearly uniform: even a perfect alignment (diagonal 1, off-diagonal about -1/(B-1)) leaves the
loss at about 0.76 ln(B) for B = 64, and the gradients the loss sends back are scaled down with it. On
this easy synthetic data the pairs still separate (in-sample R@1 over 256 pairs reaches 1.0, diagonal
cosine 0.99), but the objective saturates near chance: the loss, the quantity being optimised and
monitored, stays at 0.78 ln(B) and cannot sharpen the distribution.

Threads: huggingface/transformers#48583 (adding an ITC loss to Blip2ForImageTextRetrieval: "Two things are
needed for a usable ITC loss: 1. A learnable temperature ... converted models have no temperature to scale
similarities with"; adds `logit_scale` initialised to 2.6592 as in CLIP), huggingface/transformers#34019
(the request for QFormer ITC/ITM/ITG training losses it answers: the retrieval head stops at logits).

Fix (fixed=True): a learnable `logit_scale` initialised at ln(1/0.07) = 2.6592, logits multiplied by its
exponential, as in the PR and CLIP.

Validation (validate.py --half test22, B=64, 100 steps, final loss / ln B):
  fault: seed 0 0.7838, seed 1 0.7855, seed 2 0.7831 (loss 3.2596, 3.2668, 3.2568; ln 64 = 4.1589)
  fixed: seed 0 0.0344, seed 1 0.0404, seed 2 0.0316

Ground truth: temperature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, D, E, clip_loss, token_pairs

THREADS = ("huggingface/transformers#48583", "huggingface/transformers#34019")
CAUSE = "temperature"
FAMILY = "normalisation and temperature"

B = 64
LR = 1e-3


class QFormerAligner(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.fixed = fixed
        self.qformer = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.vision_projection = nn.Linear(D, E)
        self.text_projection = nn.Linear(DT, E)
        if fixed:
            self.logit_scale = nn.Parameter(torch.tensor(2.6592))

    def forward(self, tokens, texts):
        query_outputs = self.qformer(tokens.unsqueeze(1))[:, 0]  # (B, queries, D)
        image_embeds = F.normalize(self.vision_projection(query_outputs.mean(1)), dim=-1)
        text_embeds = F.normalize(self.text_projection(texts), dim=-1)
        # cosine similarity as logits
        logits_per_image = image_embeds @ text_embeds.t()
        if self.fixed:
            logits_per_image = self.logit_scale.exp() * logits_per_image
        return image_embeds, text_embeds, logits_per_image


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = QFormerAligner(fixed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    try:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=gen)
            tok, txt_in = tokens[idx], texts[idx]
            img, txt, logits = model(tok, txt_in)
            loss = clip_loss(logits)
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B, inputs=tok)
            optimizer.step()
            optimizer.zero_grad()
    finally:
        session.close()
