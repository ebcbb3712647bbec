"""A caption tag added to the tokenizer makes transformers CLIP pool every caption at that tag.

What the user did: trained a small transformers `CLIPModel` from scratch on their own image-caption data.
They wrote the text config by copying the `text_config` of an OpenAI CLIP checkpoint on the Hub and shrinking
it (so it kept the Hub's legacy special-token ids `bos_token_id=0, pad_token_id=1, eos_token_id=2`, the values
huggingface/diffusers#10754 shows in Stable Diffusion's CLIP text-encoder config). Their tokenizer puts the
words first and the end-of-text token last in the vocabulary (id VOCAB-1, like CLIP's 49407 being the highest
id). They also added one new special token, a `<|caption|>` tag, after the existing vocabulary (id VOCAB),
resized the token embeddings for it, and prepended it to every caption.

What went wrong and why: `CLIPTextTransformer` picks the pooled (projected) text feature with
`input_ids.argmax(-1)` whenever `config.eos_token_id == 2` (kept for Hub configs written before
transformers#24773): the original CLIP relies on the end-of-text token having the highest id. An added token
has a higher id than the EOS, so the argmax lands on the added tag: the failure reported in
huggingface/transformers#21029 and #24650, where tokens added for textual inversion have ids above the EOS and the
pooled CLIP embedding is taken at the added token instead of the EOS. Here the tag is the first token and the text tower
is causally masked, so the pooled state only ever sees the tag itself: every caption gets the same text
embedding. Each image row of the logits is then constant (the image->text term is exactly ln B), the text tower
receives an exactly zero gradient, and the image tower can only learn to make the text->image term flat too;
the loss settles at ln(B) and stays there.

Fix (transformers#24777, the resolution of #24650): set `eos_token_id` in the text config to the tokenizer's
real end-of-text id; pooling then takes the first position of that id instead of the argmax, i.e. the EOS,
which sees the whole caption.

Validation (validate.py --half test19, 100 steps, B=32, final = mean of the last 5 logged losses / ln 32):
  fault: seed 0 1.0000, seed 1 1.0000, seed 2 1.0000 (final 3.4658 = ln 32; text embeddings identical in every batch)
  fixed: seed 0 0.2900, seed 1 0.2873, seed 2 0.3684 (final 1.0051, 0.9958, 1.2768)

Ground truth: embedding_collapse.
"""

from __future__ import annotations

import torch
from transformers import CLIPConfig, CLIPModel

from common import E, IMG, SEQ, VOCAB, image_caption_pairs

THREADS = ("huggingface/transformers#24650", "huggingface/transformers#21029", "huggingface/diffusers#10754")
CAUSE = "embedding_collapse"
FAMILY = "architecture"

CAPTION_TAG = VOCAB  # the "<|caption|>" token added to the tokenizer, after its end-of-text token (VOCAB - 1)


def build_model(fixed: bool) -> CLIPModel:
    # text_config copied from a Hub CLIP checkpoint (legacy special ids), shrunk for a from-scratch run
    text_config = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, max_position_embeddings=SEQ + 1,
                       bos_token_id=0, pad_token_id=1, eos_token_id=2)
    if fixed:
        text_config["eos_token_id"] = VOCAB - 1  # the tokenizer's real end-of-text id: pool at the EOS
    vision_config = dict(image_size=IMG, patch_size=4, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=E)
    config._attn_implementation = "eager"
    model = CLIPModel(config)
    model.text_model.resize_token_embeddings(VOCAB + 1)  # room for the added <|caption|> tag
    return model


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    B = 32
    pixels, captions = image_caption_pairs(2048, seed)
    # "<|caption|> w1 ... w7 <|endoftext|>"
    captions = torch.cat([torch.full((len(captions), 1), CAPTION_TAG), captions], dim=1)

    torch.manual_seed(seed)
    model = build_model(fixed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=B)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(pixels), (B,), generator=gen)
        out = model(input_ids=captions[idx], pixel_values=pixels[idx], return_loss=True)
        loss = out.loss
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss},
                        embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=out.logits_per_image, batch_size=B, inputs=pixels[idx])
        optimizer.step()
    session.close()
