"""A user turns a MoCo-style InfoNCE snippet into an in-batch CLIP loss and keeps its `labels = torch.zeros(N)`.
In the snippet the logits are `torch.cat([positive_logit, negative_logits], dim=1)`, so the positive of every row
really is column 0; in a (B, B) image-text matrix the positive of row i is column i, and zero labels tell every
image (and, through the transposed term, every caption) that its match is whichever item happened to land first
in the batch. The loss sits at ln(B) however long it trains. Both threads are users asking why the labels are all
zeros ("From my understanding, the label for the positive logit should be 1, with the rest being 0. However, in
this code, all elements of labels are initialized to 0."), answered that "the target label of z is always zero,
which is exactly the index of the positive instance": true only where the positive was placed at index 0.
Thread: ZhaozwTD/KPE#2 ("labels = torch.zeros(len(logits), dtype=torch.long ...)"); yuyangw/MolCLR#4 ("Labels for
pos and neg samples are both 0 in loss function module").
Fix: `labels = torch.arange(BATCH)`.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.353/4.585/4.161 (= 1.047/1.102/1.001 ln(64)); fixed 0.209/0.226/0.214 (0.050/0.054/0.052 ln(64)).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import ResamplerAligner, token_pairs

THREADS = ("ZhaozwTD/KPE#2", "yuyangw/MolCLR#4")
CAUSE = "wrong_targets"
FAMILY = "data_labels"
BATCH = 64


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            # copied from a MoCo-style InfoNCE, where the positive sits in column 0 of [pos | negatives]
            labels = torch.zeros(BATCH, dtype=torch.long)
            if fixed:
                labels = torch.arange(BATCH)  # in-batch CLIP: the positive of row i is column i
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      targets=labels, batch_size=BATCH, extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
