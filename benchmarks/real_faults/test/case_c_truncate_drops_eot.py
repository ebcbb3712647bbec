"""Captions are wrapped in [SOT] ... [EOT] by my tokenizer and then cut to the text tower's context
length with a plain slice, so every caption longer than the context loses its [EOT]; a CLIP text
model pools the hidden state at the [EOT] position. Thread(s): facebookresearch/SLIP#18 ("the
truncation is done after wrapping original tokens with [SOT] and [EOT] ... it's possible that [EOT]
token is cut off ... the text transformer uses the embedding of the [EOT] as feature
representation"); mlfoundations/open_clip#1151 (with no EOS in a row, `argmax` "returns index 0 ...
silently pools position 0 (BOS/CLS) instead of EOS"); facebookresearch/ImageBind#82. Under the
causal mask position 0 sees only [SOT], so every caption gets the same text embedding. Fix: truncate
the words, keep [EOT] as the last token (what openai/CLIP's `tokenize(truncate=True)` does).
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; mean of the last 5 losses): fault 4.159,
4.159, 4.159 vs ln(B) = 4.159 (fails outright: every caption pools [SOT]); fixed 1.950, 2.001, 1.451.
Ground truth: embedding_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # so `python case.py` finds common
import torch

from common import SEQ, VOCAB, clip_loss, image_caption_pairs, tiny_clip

THREADS = ("facebookresearch/SLIP#18", "mlfoundations/open_clip#1151", "facebookresearch/ImageBind#82")
CAUSE = "embedding_collapse"
FAMILY = "data_pipeline"
BATCH = 64
SOT, EOT = 0, VOCAB - 1  # the tiny CLIP's bos / eos ids; context length = SEQ


def collate(ids: torch.Tensor, fixed: bool) -> torch.Tensor:
    wrapped = torch.cat([torch.full((len(ids), 1), SOT), ids], 1)  # [SOT] words... [EOT]: SEQ + 1 tokens
    if fixed:
        return torch.cat([wrapped[:, :SEQ - 1], wrapped[:, -1:]], 1)  # keep [EOT] last
    return wrapped[:, :SEQ]  # plain slice to the context length: [EOT] is cut off


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    pixels, captions = image_caption_pairs(2048, seed=seed)
    model = tiny_clip(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(pixels), (BATCH,), generator=g)
            ids = collate(captions[idx], fixed)
            out = model(input_ids=ids, pixel_values=pixels[idx])
            loss = clip_loss(out.logits_per_image)
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                      logits=out.logits_per_image, batch_size=BATCH, inputs=ids)
            opt.step(); opt.zero_grad()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
