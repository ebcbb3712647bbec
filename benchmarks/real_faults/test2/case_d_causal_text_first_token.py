"""The caption embedding is taken BERT-style from the first position, `last_hidden_state[:, 0]`, of a CLIP
text transformer. CLIP's text encoder is causal, so position 0 (the start token, the same for every
caption) attends only to itself: every caption gets the same vector, each logits row is constant, and the
loss cannot leave ln(B). Threads: yuval-alaluf/Attend-and-Excite#9 ("due to the casual mask in CLIP
training, the <sot> will not receive any information"), openai/CLIP#183 ("We use a causal attention mask
... So we can take the embedding at the EOT token"). The fix: pool at the end-of-text token
(`pooler_output`).
Validated without the tool (seeds 0,1,2; 60 steps; batch 64): fault final loss (mean of the last 5 steps)
4.159/4.159/4.159 vs ln(64) = 4.159; fixed 1.79/1.68/1.96.
Ground truth: embedding_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import SEQ, clip_loss, image_caption_pairs, tiny_clip

THREADS = ("yuval-alaluf/Attend-and-Excite#9", "openai/CLIP#183")
CAUSE = "embedding_collapse"
FAMILY = "architecture"
BATCH = 64
BOS = 0  # the tokenizer's start-of-text id, prepended to every caption


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    model = tiny_clip(seed)
    pixels, ids = image_caption_pairs(1024, seed)
    # <sot> words <eot>, as a CLIP tokenizer writes them
    ids = torch.cat([torch.full((len(ids), 1), BOS), ids[:, :SEQ - 2], ids[:, -1:]], dim=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(ids), (BATCH,), generator=g)
            vision = model.vision_model(pixel_values=pixels[idx])
            text = model.text_model(input_ids=ids[idx])
            pooled = text.pooler_output if fixed else text.last_hidden_state[:, 0]  # the fault: first token
            img = F.normalize(model.visual_projection(vision.pooler_output), dim=-1)
            txt = F.normalize(model.text_projection(pooled), dim=-1)
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, extras={"logit_scale": scale})
            opt.step()
            opt.zero_grad(set_to_none=True)


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
