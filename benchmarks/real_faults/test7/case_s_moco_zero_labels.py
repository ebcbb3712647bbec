"""A user ports MoCo's InfoNCE to a CLIP-style image->text aligner and keeps MoCo's target line,
`labels = torch.zeros(N, dtype=torch.long)`. In MoCo that is right: the logits are `cat([l_pos, l_neg], 1)`, so the
positive key is always column 0 ("Positive samples are the zeroth", KaimingHe in facebookresearch/moco#24;
osdf: "`labels` is the ground truth 'index' for the 1+len(queue) wide score tensor ... this is always index 0").
Here the logits are the full (B, B) image @ text.T matrix, whose positive for row i is column i, so every image is
told that its caption is whatever text happens to sit first in the batch and every caption that its image is the first
image. haon-chen/MoCa#2 is the same confusion seen from the other side ("the target is set to diagonal but scores are
organized in [B, 1 + neg_ratio]. So ... the target should be set to all zeros"; answer: the similarity is the full
B x B matrix, "the ground-truth label for query i is simply the diagonal index i"). The loss never leaves ln(B).
Thread: facebookresearch/moco#24 ("Why all targets are zeros?"); haon-chen/MoCa#2 ("target = torch.arange(B)").
Fix: `labels = torch.arange(BATCH)` (the positive of row i is column i of the B x B matrix).
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.3521/4.2953/4.2398 (= 1.047/1.033/1.020 ln(64), ln(64) = 4.1589: at chance); fixed 0.1471/0.1693/0.1703
(0.035/0.041/0.041 ln(64)).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import ResamplerAligner, token_pairs

THREADS = ("facebookresearch/moco#24", "haon-chen/MoCa#2")
CAUSE = "wrong_targets"
FAMILY = "data_labels"
BATCH = 64


def info_nce(logits, labels):
    # ported from a MoCo-style contrast module: cross entropy against the positive's index, both directions
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=0)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            if fixed:
                labels = torch.arange(BATCH)
            else:
                labels = torch.zeros(BATCH, dtype=torch.long)  # MoCo: "positive key indicators"
            loss = info_nce(logits, labels)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, targets=labels, extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
