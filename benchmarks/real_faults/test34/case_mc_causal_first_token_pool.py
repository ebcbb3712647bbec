"""Text embedding pooled from the first position of a causal text tower: every caption gets the same vector.

What the user did: trained a CLIP-style image-text model from scratch (transformers `CLIPModel`, tiny config,
random weights). The captions are tokenised the CLIP way, `<bos> w1 ... w6 <eos>`, and, out of BERT habit, the
user pooled the text tower by taking the hidden state of the first token, `text_model(...).last_hidden_state[:, 0]`,
then applied `text_projection` to it. The image side uses the vision tower's pooled output and
`visual_projection`, as CLIP does.

What went wrong and why: CLIP's text transformer is causal. The first position attends only to itself, so its
final hidden state is a function of the `<bos>` token and position 0 alone, identical for every caption. All text
embeddings in a batch are the same vector, each row of the image->text logits is constant, and the symmetric
InfoNCE can never get below ln(B): the image->text half is exactly ln(B) whatever the model does, and the
text->image half is minimised by making every image score the same. The loss sits at ln(B) from step 0. This is the
failure of salesforce/progen#8: a sequence head put on the causal ProGen2 model pooled the first token's hidden
state, "which is not influenced by any consecutive tokens, which leads to predictions being always exactly the
same"; the fix the user settled on is the GPT-J/GPT-2 convention of pooling the last (end-of-sequence) token, the
one that has seen the whole sequence.

Fix (fixed=True): pool at the `<eos>` token, i.e. the text tower's `pooler_output` (what
`CLIPModel.get_text_features` does).

Validation (validate.py, seeds 0/1/2, B=32, 100 steps, final loss / ln(32)):
  fault: 1.0000 / 1.0000 / 1.0000   (final loss 3.4658 / 3.4658 / 3.4657: ln(32) = 3.4657)
  fixed: 0.2955 / 0.3211 / 0.3127   (final loss 1.0242 / 1.1130 / 1.0836)

Ground truth: embedding_collapse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import SEQ, clip_loss, image_caption_pairs, tiny_clip

THREADS = ("salesforce/progen#8",)
CAUSE = "embedding_collapse"
FAMILY = "architecture"

B = 32
BOS = 0  # the tiny config's bos_token_id


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    model = tiny_clip(seed)
    pixels, ids = image_caption_pairs(1024, seed)
    # CLIP-style tokenisation: <bos> + words, truncated to the context length, <eos> last
    ids = torch.cat([torch.full((len(ids), 1), BOS), ids[:, : SEQ - 2], ids[:, -1:]], dim=1)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(ids), (B,), generator=g)
        pix, tok = pixels[idx], ids[idx]

        img = model.visual_projection(model.vision_model(pixel_values=pix).pooler_output)
        out = model.text_model(input_ids=tok)
        if fixed:
            pooled = out.pooler_output               # hidden state at <eos>: has seen the whole caption
        else:
            pooled = out.last_hidden_state[:, 0]     # "[CLS]" pooling: position 0 only ever sees <bos>
        txt = model.text_projection(pooled)

        img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)

        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=pix)
        optimizer.step()
    session.close()
