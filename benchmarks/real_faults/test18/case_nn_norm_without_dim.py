"""A user L2-normalises the image and text embeddings of a Perceiver aligner by hand before the CLIP logits,
writing `img / img.norm()` and `txt / txt.norm()` without `dim=-1, keepdim=True`. torch's `norm()` with no dim
(like `tf.math.l2_normalize` with its default axis=None in the thread) takes the norm of the whole (B, E)
matrix, so each row ends with norm about 1/sqrt(B) instead of 1: the embeddings are not unit vectors, the
cosine logits shrink by about B and the loss stays close to ln(B) while the learnable logit scale creeps up
far too slowly to make up for it.
Thread: tensorflow/similarity#237 ("Default axis is None, so the normalization will be over batch as well as
embedding dim ... training failed with loss stuck at an unreasonably high level"); xmed-lab/CLIP_Surgery#35
(CLIP features divided by `.norm(dim=1, keepdim=True)` over the wrong axis: "It is a bug for this demo").
Fix: normalise each row: `img / img.norm(dim=-1, keepdim=True)` (and the same for the text).
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss
3.0425/3.0469/3.0492 (= 0.878/0.879/0.880 ln(B), ln(32) = 3.466); fixed 0.1313/0.1380/0.1451 (= 0.038/0.040/0.042
ln(B)).
Ground truth: not_normalised.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import token_pairs, clip_loss, PerceiverAligner

THREADS = ("tensorflow/similarity#237", "xmed-lab/CLIP_Surgery#35")
CAUSE = "not_normalised"
FAMILY = "normalisation"
BATCH = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            lat = model.perceiver(tokens[idx], return_embeddings=True)
            img = model.proj(lat.mean(1))
            txt = model.text(texts[idx])
            if fixed:
                img = img / img.norm(dim=-1, keepdim=True)
                txt = txt / txt.norm(dim=-1, keepdim=True)
            else:
                img = img / img.norm()              # "unit-norm features"
                txt = txt / txt.norm()
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
