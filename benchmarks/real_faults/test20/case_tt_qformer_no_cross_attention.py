"""A BLIP-2 style Q-Former built from a plain `transformers.BertModel` whose config has no cross-attention
layers: the image tokens handed to it as `encoder_hidden_states` are silently dropped.

What the user did: a vision->text alignment model in the BLIP-2 mould. Frozen-backbone patch tokens go
through a trainable `ln_vision` + `vision_proj`, then into a small Q-Former: 8 learned query tokens fed to
a `BertModel` as `inputs_embeds`, the projected patch tokens passed as `encoder_hidden_states`, the query
outputs mean-pooled and projected; captions through a linear text head; learnable logit scale, symmetric
CLIP loss, AdamW. The Q-Former config is a plain `BertConfig(...)`: neither `is_decoder` nor
`add_cross_attention` is set.

What went wrong and why: a `BertLayer` only builds a `crossattention` block when
`config.add_cross_attention` is true, and it only looks at `encoder_hidden_states` when `config.is_decoder`
is true. With neither set the argument is accepted and ignored, no error, no warning: the Q-Former runs
self-attention over the 8 queries only. Its output is then the same vector for every image in the
batch, so every row of the logit matrix is the same: the text->image half of the loss is exactly ln(B)
and the image->text half can only be pushed down to ln(B) (by making the one image vector equally close
to every caption), and `ln_vision` / `vision_proj` (the whole image path) never receive a gradient. The
text head and the Q-Former weights do get gradients, but nothing can tell one image from another.

The threads: huggingface/transformers#4293 reported that the decoder of an `EncoderDecoderModel` built
with `from_encoder_decoder_pretrained` had no cross-attention layers; the fixing PR (#4680) says that
training it "did not work because there were no cross attention layers to be trained": the decoder
ignored the encoder's states. Same mechanism here: the module meant to read the image never attends to
it, so the image side is cut out of the graph. Closest cause id: part of the model gets no gradient.

The fix (fixed=True): build the Q-Former with cross-attention layers, `is_decoder=True,
add_cross_attention=True`, as the fixing PR does for the decoder config.

Validation (validate.py, seeds 0/1/2, 100 steps, B=32, final loss / ln(B)):
    fault 1.0004 / 1.0004 / 1.0005 (final 3.467 / 3.467 / 3.467 against ln 32 = 3.466; first step 5.64 / 3.98 / 4.03)
    fixed 0.0336 / 0.0304 / 0.0320 (final 0.117 / 0.105 / 0.111)

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel

from common import DT, D, E, clip_loss, token_pairs

THREADS = ("huggingface/transformers#4293", "huggingface/transformers#4680")
CAUSE = "no_gradient_path"
FAMILY = "architecture"

B = 32
H = 32  # Q-Former width
N_QUERY = 8


class QFormerAligner(nn.Module):
    def __init__(self, qformer_config: BertConfig):
        super().__init__()
        self.ln_vision = nn.LayerNorm(D)
        self.vision_proj = nn.Linear(D, H)
        self.qformer = BertModel(qformer_config, add_pooling_layer=False)
        self.query_tokens = nn.Parameter(torch.randn(1, N_QUERY, H) * 0.02)
        self.image_head = nn.Linear(H, E)
        self.text_head = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, patch_tokens):
        image_states = self.vision_proj(self.ln_vision(patch_tokens))  # (B, T, H)
        queries = self.query_tokens.expand(len(patch_tokens), -1, -1)
        out = self.qformer(inputs_embeds=queries, encoder_hidden_states=image_states).last_hidden_state
        return self.image_head(out.mean(1))

    def forward(self, patch_tokens, text_features):
        img = F.normalize(self.encode_image(patch_tokens), dim=-1)
        txt = F.normalize(self.text_head(text_features), dim=-1)
        return img, txt


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)

    config = BertConfig(vocab_size=2, hidden_size=H, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * H, max_position_embeddings=N_QUERY,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if fixed:  # the fix: a Q-Former that really cross-attends to the image tokens
        config.is_decoder = True
        config.add_cross_attention = True
    config._attn_implementation = "eager"

    model = QFormerAligner(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=gen)
        tok, txt_in = tokens[idx], texts[idx]
        img, txt = model(tok, txt_in)
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tok)
        optimizer.step()
        optimizer.zero_grad()
    session.close()
