"""Both layers of the image MLP projector zero-initialised ("start the projector as a no-op").

What the user did: a LLaVA-style 2-layer GELU MLP projector over mean-pooled frozen patch tokens, aligned to a
linear text head with the symmetric CLIP loss and a learnable logit scale. Borrowing the zero-init trick
(zero-initialised heads / "zero convolutions" so a new module starts as a no-op), their `init_projector` runs
`nn.init.zeros_` on the weight and bias of *every* Linear in the projector.

The bug: with both layers at zero the hidden activations are GELU(0) = 0, so the second layer's weight gets
the gradient g x h^T = 0, and the first layer gets W2^T g = 0: neither weight matrix ever moves. Only the
output bias learns, and a bias is the same for every image: all image embeddings are one vector, each row of
the image->text logits is the same, and the loss cannot go below ln(B) however long it trains. Zero-init only
works on the *last* layer of a block (its input is non-zero, so it gets a gradient at once).

From the threads:
- yz93/LAVT-RIS#25 ("About zero initialization"): with two consecutive zero-initialised layers the printed
  gradient of the first is all zeros; "I canceled out the first zero initialization, it seems that it's
  getting right" (only `nn.init.zeros_(a_2[0].weight)` kept).
- jaywalnut310/vits#215: "if use weight or bias all 0, the proj will be dead."
- smallflyingpig/universal_adversarial_perturbation_generative_network_for_speaker_recognition#4: zeros in a
  layer zero the gradients of the layers before it; "the gradient for the last layer is not zero, so the last
  layer will be optimized firstly".

Thread: yz93/LAVT-RIS#25
Thread: jaywalnut310/vits#215
Thread: smallflyingpig/universal_adversarial_perturbation_generative_network_for_speaker_recognition#4
Fix: zero-initialise only the last projector layer (the first keeps PyTorch's default Kaiming-uniform init),
as in the LAVT-RIS thread.

Validation (validate.py --half test17, seeds 0 1 2, B=64, ln(B)=4.1589, 150 steps, one CPU thread):
fault final CLIP loss 4.1597 / 4.1613 / 4.1611, final/ln(B) = 1.0002 / 1.0006 / 1.0005 (step 0 exactly ln(B) = 4.1589);
fixed final 0.0785 / 0.1125 / 0.1030, final/ln(B) = 0.0189 / 0.0270 / 0.0248. Under 1.5 s per run.

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math
import pathlib
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from common import DT, D, E, clip_loss, token_pairs  # noqa: E402

THREADS = ("yz93/LAVT-RIS#25", "jaywalnut310/vits#215",
           "smallflyingpig/universal_adversarial_perturbation_generative_network_for_speaker_recognition#4")
CAUSE = "no_gradient_path"
FAMILY = "initialisation"


class MLPProjectorAligner(nn.Module):
    """Frozen patch tokens -> mean over tokens -> Linear-GELU-Linear projector; text -> linear head."""

    def __init__(self):
        super().__init__()
        self.projector = nn.Sequential(nn.Linear(D, 2 * E), nn.GELU(), nn.Linear(2 * E, E))
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens: torch.Tensor, texts: torch.Tensor):
        img = self.projector(tokens.mean(1))
        return F.normalize(img, dim=-1), F.normalize(self.text(texts), dim=-1)


def init_projector(projector: nn.Sequential, last_only: bool) -> None:
    """The user's zero-init: every Linear of the projector (fault) or only the last one (fix)."""
    linears = [m for m in projector if isinstance(m, nn.Linear)]
    for m in (linears[-1:] if last_only else linears):
        nn.init.zeros_(m.weight)
        nn.init.zeros_(m.bias)


def train(watch, steps: int = 150, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = MLPProjectorAligner()
    init_projector(model.projector, last_only=fixed)
    B = 64
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed + 100)
    with watch(model, opt, batch_size=B) as w:
        for step in range(steps):
            idx = torch.randperm(len(tokens), generator=g)[:B]
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=B, inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp().detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose

    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
