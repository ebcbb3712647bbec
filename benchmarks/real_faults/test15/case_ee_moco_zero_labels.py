"""A user moves from a MoCo/SimCLR-style InfoNCE (positive logit concatenated in column 0, negatives
after it, `labels = torch.zeros(N)`) to CLIP-style in-batch negatives for a Perceiver image encoder
(perceiver-pytorch) and a text MLP: logits are now the (B, B) image-text similarity matrix, whose
positives lie on the diagonal, but they kept the all-zeros labels from the old loss. Every image is
told that caption 0 of the batch is its match (and every caption image 0); batches are drawn at random,
so nothing can learn which item sits at index 0. The loss stays around ln(B), retrieval at chance.
The threads are users reading the same `labels = torch.zeros(...)` line and asking whether the
positive is really at index 0; in the (B, B) layout it is not.

Thread: YihengZhang-CV/SeCo-Sequence-Contrastive-Learning#3 ("your ground truth are all zeros `label = torch.zeros([x.shape[0]]).long()`")
Thread: RElbers/info-nce-pytorch#13 ("why labels are torch.arrange(len(query)? ... I think labels for query-postive key should be torch.ones(len(query))")
Fix: labels = torch.arange(BATCH)
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss 4.45/4.40/3.89 (= 1.069/1.057/0.936 ln(B)); fixed 0.20/0.25/0.21 (= 0.049/0.059/0.051 ln(B)).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from common import PerceiverAligner, token_pairs

THREADS = ("YihengZhang-CV/SeCo-Sequence-Contrastive-Learning#3", "RElbers/info-nce-pytorch#13")
CAUSE = "wrong_targets"
FAMILY = "loss_function"
BATCH = 64


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    if fixed:
        labels = torch.arange(BATCH)
    else:
        labels = torch.zeros(BATCH, dtype=torch.long)  # the bug: MoCo's "positive in column 0" labels on (B, B) logits
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            x, t = tokens[idx], texts[idx]
            img, txt = model(x, t)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      targets=labels, batch_size=BATCH, inputs=x,
                      extras={"logit_scale": model.logit_scale.exp().detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
