"""Captions longer than the context are truncated without re-inserting the end-of-text token, and the CLIP
text tower pools at the end-of-text position.

What the user did: trained a CLIP model (transformers `CLIPModel`, built from a config, text context of
8 positions) on image-caption pairs whose captions are longer than the context. Their own tokenizer
follows open_clip's at the time: `[SOT] + words + [EOT]`, then `tokens = tokens[:context_length]`
when the caption is too long.

What went wrong and why: the CLIP text tower does not pool a mean or a [CLS]: it reads the hidden
state at the end-of-text token (the highest id in OpenAI's code; in transformers the first position
equal to `eos_token_id`). Truncating `[SOT] w1 ... wn [EOT]` to the context cuts the [EOT] off, so no
position matches; `argmax` of an all-zero mask is 0 and every caption is pooled at position 0, the
[SOT] token. The text encoder is causal, so position 0 has seen only [SOT]: every caption of the batch
gets the same text embedding, whatever it says. The image tower has nothing to align to and the CLIP
loss sits at exactly ln(B) from the first step to the last (the logit scale only decides how flat).
Reported on open_clip's tokenizer (mlfoundations/open_clip#130, "eot_token after truncating":
`tokens = tokens[:context_length]` drops the EOT although the model reads the text feature at the
highest id; the answer: "Good catch!", fixed as in OpenAI's `clip.tokenize`); the same truncation slip
(special end token cut off by `text[:max_len]` after it was added) in jackroos/VL-BERT#28, confirmed
and fixed by the maintainer.

Fix (OpenAI's `clip.tokenize`, open_clip after #130): after truncating, put the end-of-text token
back in the last position: `tokens = tokens[:context_length]; tokens[-1] = eot_token`.

Validation (validate.py, 100 steps, final loss / ln(32), seeds 0/1/2):
fault 1.0000 / 1.0000 / 1.0000 (final loss 3.4658 / 3.4658 / 3.4657, ln 32 = 3.4657);
fixed 0.3113 / 0.2744 / 0.2937 (final loss 1.079 / 0.951 / 1.018).

Ground truth: misaligned_pairs.
"""

from __future__ import annotations

import torch

from common import SEQ, VOCAB, image_caption_pairs, tiny_clip

THREADS = ("mlfoundations/open_clip#130", "jackroos/VL-BERT#28")
CAUSE = "misaligned_pairs"
FAMILY = "data pipeline"

B = 32
SOT, EOT = 0, VOCAB - 1          # start/end of text ids of the tiny vocabulary (bos_token_id / eos_token_id)
CONTEXT = SEQ                    # the text tower's max_position_embeddings


def raw_captions(n: int, seed: int) -> tuple[torch.Tensor, list[list[int]]]:
    """Pixels and word-id captions of 11 words (7 descriptive words then 4 filler words)."""
    pixels, ids = image_caption_pairs(n, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    filler = torch.randint(1, VOCAB - 1, (n, 4), generator=g)
    words = torch.cat([ids[:, :-1], filler], dim=1)      # drop common's EOT: these are the raw words
    return pixels, words.tolist()


def tokenize(captions: list[list[int]], context_length: int, fixed: bool) -> torch.Tensor:
    out = torch.zeros(len(captions), context_length, dtype=torch.long)
    for i, words in enumerate(captions):
        tokens = [SOT] + words + [EOT]
        if len(tokens) > context_length:
            tokens = tokens[:context_length]
            if fixed:
                tokens[-1] = EOT
        out[i, :len(tokens)] = torch.tensor(tokens)
    return out


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    pixels, captions = raw_captions(1024, seed)
    input_ids = tokenize(captions, CONTEXT, fixed)        # tokenized once, as a dataset .map() would
    model = tiny_clip(seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    session = watch(model, optimizer, batch_size=B)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(pixels), generator=g)
    for step in range(steps):
        start = (step * B) % len(pixels)
        if start + B > len(pixels):
            order = torch.randperm(len(pixels), generator=g)
            start = 0
        idx = order[start:start + B]
        out = model(input_ids=input_ids[idx], pixel_values=pixels[idx], return_loss=True)
        optimizer.zero_grad()
        out.loss.backward()
        session.observe(step, losses={"clip": out.loss},
                        embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=out.logits_per_image, batch_size=B, inputs=pixels[idx],
                        extras={"logit_scale": model.logit_scale.exp()})
        optimizer.step()
    session.close()
