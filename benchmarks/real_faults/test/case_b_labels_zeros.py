"""InfoNCE targets copied from MoCo: `labels = torch.zeros(B)` on a CLIP-style in-batch (B, B) logit matrix.

In MoCo-style code the logits are `cat([l_pos, l_neg], dim=1)`, so the positive sits in column 0 and the
targets are all zeros. A user porting that loss to CLIP's in-batch similarity matrix keeps the zeros; every
image is then told that caption 0 of the batch is its match (and every caption that image 0 is). Threads:
wangyuxinwhy/uniem#99 ("labels = torch.zeros(sim_matrix.size(0)) ... shouldn't it be labels = torch.arange(...)?"),
YihengZhang-CV/SeCo-Sequence-Contrastive-Learning#3 ("simply learning that everything is a negative sample
because your ground truth are all zeros"). Fix: `labels = torch.arange(B)` (the diagonal).
Model: a tiny transformers CLIPModel (random weights), its own `logits_per_image`, AdamW.

Validated without the tool (seeds 0,1,2; 60 steps; batch 64; mean loss over the last 12 steps): fault
4.169 / 4.088 / 4.136 vs ln(64) = 4.159 (fails outright); fixed 1.807 / 1.581 / 1.834 (learned, below 0.5 ln B).
Ground truth: wrong_targets.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/real_faults (common.py)

import torch
import torch.nn.functional as F

from common import image_caption_pairs, tiny_clip

THREADS = ("wangyuxinwhy/uniem#99", "YihengZhang-CV/SeCo-Sequence-Contrastive-Learning#3")
CAUSE = "wrong_targets"
FAMILY = "data_labels"
BATCH = 64


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    pixels, ids = image_caption_pairs(1024, seed=seed)
    model = tiny_clip(seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(pixels, ids), batch_size=BATCH,
                                         shuffle=True, drop_last=True, generator=g)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            for px, tok in loader:
                if step >= steps:
                    break
                out = model(input_ids=tok, pixel_values=px)
                logits = out.logits_per_image
                if fixed:
                    labels = torch.arange(len(logits))
                else:
                    labels = torch.zeros(len(logits), dtype=torch.long)  # MoCo's "positive is column 0"
                loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                          logits=logits, batch_size=BATCH, inputs=px)
                opt.step()
                opt.zero_grad()
                step += 1


if __name__ == "__main__":
    import sys, diagnose; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + __import__("pathlib").Path(__file__).stem, **kw))
