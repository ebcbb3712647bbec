"""Frozen-backbone features cached through a shuffled DataLoader, then paired with captions in dataset order.

What the user did: to save compute, the frozen vision backbone is run once over the whole image set and its
patch tokens are cached; the alignment model (perceiver-pytorch Perceiver over the cached tokens -> mean over
latents -> projection; caption features -> small MLP; CLIP loss) is then trained on
`TensorDataset(cached_tokens, captions)`. The extraction loop reused the training DataLoader settings,
`shuffle=True`, and concatenated the batches in the order the loader yielded them.

What went wrong and why: a shuffled loader yields the images in a random permutation, so row i of the cache holds
the features of some other image pi(i), while the captions stay in dataset order. Every (image, caption) pair
the model is trained on is a random pairing: there is no shared signal between the two sides, the contrastive
loss has nothing to learn and stays at ln(B) (the model can at best memorise random pairs). Nothing errors: the
shapes match, the cache looks like a normal feature bank, and the training loader itself is fine.

The threads: jindongwang/transferlearning#222 (the released ResNet-50 features of Office-31 have labels
misaligned with the feature rows; the maintainer: "the data for generating ResNet-50 features are shuffled ...
Just remember no permutations or other things involved" when extracting), facebookarchive/C3D#57 (features /
probabilities extracted from a trained network give ~50% accuracy on the same data it scored 100% on while
training; the answer: turn off shuffle in the feature-extraction prototxt, the extracted rows no longer follow
the label list).

The fix (fixed=True): extract with `shuffle=False`, so the cache rows stay in dataset order (the training
loader still shuffles).

Validation (validate.py, 100 steps, B = 64, final loss / ln(64)): fault 0.996 / 0.993 / 0.995 (seeds 0/1/2),
fixed 0.080 / 0.058 / 0.062.

Ground truth: misaligned_pairs.
"""

from __future__ import annotations

import torch
from common import D, PerceiverAligner, clip_loss, token_pairs
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

THREADS = ("jindongwang/transferlearning#222", "facebookarchive/C3D#57")
CAUSE = "misaligned_pairs"
FAMILY = "data pipeline"

B = 64


def frozen_backbone(seed: int) -> nn.Module:
    """The 'pretrained' patch encoder the user loads and freezes (fixed weights, as from a checkpoint)."""
    torch.manual_seed(1000 + seed)
    net = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Linear(D, D))
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    patches, captions = token_pairs(2048, seed=seed)  # paired by index
    backbone = frozen_backbone(seed)

    # 1) cache the frozen backbone's patch tokens once
    extract_loader = DataLoader(TensorDataset(patches), batch_size=256, shuffle=not fixed)
    with torch.no_grad():
        cached = torch.cat([backbone(x) for (x,) in extract_loader])

    # 2) train the alignment model on (cached tokens, captions)
    loader = DataLoader(TensorDataset(cached, captions), batch_size=B, shuffle=True, drop_last=True)
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        for tok, txt in loader:
            if step >= steps:
                break
            img_emb, txt_emb = model(tok, txt)
            logits = model.logit_scale.exp() * img_emb @ txt_emb.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img_emb, "text": txt_emb},
                            logits=logits, batch_size=B, inputs=tok)
            optimizer.step()
            step += 1
    session.close()
