"""Visual tokens spliced into a frozen encoder's input through `.data`: the resampler never gets a gradient.

What the user did: a LLaVA/Qwen-VL-style image embedder trained against a locked text tower. Frozen-backbone
patch tokens go through a trainable flamingo-pytorch PerceiverResampler and a trainable projector; the resulting
visual tokens are written into the placeholder slots of a prompt `<img> [slot x 8] </img>` embedded by a
frozen (pretrained) language encoder, whose pooled, projected output is the image embedding. Captions are
embedded by the locked text tower (frozen features, frozen head). Only the resampler, the projector and the
logit scale are trainable. To run the frozen encoder under (reentrant) gradient checkpointing they made its
input embeddings require grad, as `enable_input_require_grads()` does. The in-place slot assignment then
raised "a view of a leaf Variable that requires grad is being used in an in-place operation"
(QwenLM/Qwen-VL#120), and they applied the workaround posted in QwenLM/Qwen-VL#124: write the image features
into the slots of `hidden_states.data` (taking `.data` of the image features too).

What went wrong and why: `.data` writes bypass autograd. The visual tokens enter the forward pass by value
only, so the graph from the loss ends at the prompt embeddings: the resampler and the projector get no gradient
at all (grad None), which is what the user in QwenLM/Qwen-VL#124 found out: the `.data` version left the
trainable ViT without any gradient, while the `.clone()` version trained. Nothing that could align the images trains; only the
logit scale moves, and the loss stays above ln(B) (random image embeddings against fixed text embeddings).

Fix (QwenLM/Qwen-VL#124, the `.clone()` solution from #120): clone the prompt embeddings and assign the visual
tokens into the clone normally (an out-of-place splice such as torch.cat works too), so the gradient reaches
the visual tokens.

Validation (validate.py --half test19, 100 steps, B=32, final = mean of the last 5 logged losses / ln 32):
  fault: seed 0 1.5750, seed 1 1.2514, seed 2 1.3475 (final 5.4584, 4.3370, 4.6700: above ln 32 = 3.4657)
  fixed: seed 0 0.0635, seed 1 0.0616, seed 2 0.0744 (final 0.2202, 0.2136, 0.2579)

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("QwenLM/Qwen-VL#124", "QwenLM/Qwen-VL#120")
CAUSE = "no_gradient_path"
FAMILY = "frozen parts"

PAD, IMG_START, IMG_END = 0, 1, 2
SLOTS = 8


class FrozenEncoder(nn.Module):
    """Stand-in for the pretrained language encoder: embeddings, one pre-norm block, final norm, pooled head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(4, D)
        self.block = nn.TransformerEncoderLayer(D, 2, 2 * D, dropout=0.0, batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, E)

    def forward(self, inputs_embeds):
        h = checkpoint(self.block, inputs_embeds, use_reentrant=True)
        return self.head(self.norm(h).mean(1))


class SlotImageEmbedder(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.fixed = fixed
        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=SLOTS)
        self.projector = nn.Linear(D, D)
        self.encoder = FrozenEncoder().requires_grad_(False)
        self.text_head = nn.Linear(DT, E).requires_grad_(False)  # locked text tower's head
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.register_buffer("prompt", torch.tensor([IMG_START] + [PAD] * SLOTS + [IMG_END]))

    def encode_image(self, tokens):
        visual = self.projector(self.resampler(tokens.unsqueeze(1))[:, 0])  # (B, SLOTS, D)
        hidden = self.encoder.embed(self.prompt.expand(len(tokens), -1))
        hidden.requires_grad_(True)  # enable_input_require_grads(): reentrant checkpointing of the frozen encoder
        if self.fixed:
            hidden = hidden.clone()
            hidden[:, 1:1 + SLOTS] = visual
        else:
            # hidden[:, 1:1 + SLOTS] = visual  -> "a view of a leaf Variable that requires grad ... in-place"
            hidden.data[:, 1:1 + SLOTS] = visual.data
        return self.encoder(hidden)

    def forward(self, tokens, texts):
        return F.normalize(self.encode_image(tokens), dim=-1), F.normalize(self.text_head(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    B = 32
    tokens, texts = token_pairs(2048, seed)
    torch.manual_seed(seed)
    model = SlotImageEmbedder(fixed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=gen)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                        logits=logits, batch_size=B, inputs=tokens[idx])
        optimizer.step()
    session.close()
