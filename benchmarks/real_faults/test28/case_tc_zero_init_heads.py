"""Both towers' output layers initialised with zeros: every embedding starts at exactly 0, the logits are all 0,
and the gradient of every parameter is exactly 0, so the loss sits at ln(B) for ever.

What the user did: `common.PerceiverAligner` (patch tokens -> perceiver-pytorch Perceiver -> mean over
latents -> `proj`; text features -> MLP `text`), CLIP loss with a learnable logit scale, AdamW, batch 64. The
user added an `init_weights` that gives the output layers a `zeros` initializer (as transformers' TF
Transformer-XL did for the weights of its adaptive-softmax output layers, `initializer='zeros'`), meaning to
start the heads "neutral" and let training grow them.

What went wrong and why: with `proj` and the last text layer at zero (weights and biases), both embedding
batches are all-zero rows, `F.normalize` returns zeros, the logits are all 0 and the loss is exactly ln(B).
The two heads meet only through the product `img @ txt.T`: the gradient reaching the image side is
`scale * (softmax - I) @ txt / B`, proportional to the text embeddings (zero), and the text side's is
proportional to the image embeddings (zero). So the heads get zero gradient, nothing behind them gets any
(their zero weights block it), and the logit scale's gradient is zero too: every `.grad` is exactly 0 on every
step, Adam's update is 0/(0 + eps) = 0, and no amount of training breaks out. transformers#6236: "the weight
initializer in class TFAdaptiveSoftmaxMask were all set to zeros. This causes the gradient can't propagate
back" (losses do not decrease when training TFTransfoXLLMHeadModel); transformers#2095 is the earlier report
of the symptom on the same model: the gradients of the forward pass are all zero and the loss does not change.

Fix (the thread's): a random initializer for the output layers (here: PyTorch's default `nn.Linear` init,
i.e. no zeroing).

Validation (validate.py, 100 steps, B = 64, ln B = 4.1589; final = mean of the last 5 steps):
fault final / ln(B) = 1.0000 / 1.0000 / 1.0000 on seeds 0 / 1 / 2 (the loss is ln(64) on every step);
fixed 0.0406 / 0.0440 / 0.0386.

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import torch
from torch import nn

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("huggingface/transformers#6236", "huggingface/transformers#2095")
CAUSE = "no_gradient_path"
FAMILY = "initialisation"

B = 64


def init_weights(model: PerceiverAligner) -> None:
    """Output layers of both towers start at zero (the TF code's `initializer='zeros'`)."""
    for layer in (model.proj, model.text[-1]):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(n=2048, seed=seed)
    model = PerceiverAligner()
    if not fixed:
        init_weights(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
    session.close()
