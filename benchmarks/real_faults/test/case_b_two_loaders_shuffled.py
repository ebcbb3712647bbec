"""Images and captions come from two DataLoaders, each with `shuffle=True`, zipped together: every batch pairs
images with captions of other items, so the pairs carry no signal and the CLIP loss stays at ln(B).

Threads: sayakpaul/SimSiam-TF#1 ("Loader shuffled by different seed ... `for (x_a, x_b) in (loader_a, loader_b)`",
the two views no longer come from the same sample), PeterL1n/BackgroundMattingV2#121 (how zipped datasets pair
items under shuffling). Fix: one DataLoader over a dataset that returns the (image, caption) pair.
Model: perceiver-pytorch Perceiver over frozen patch tokens (common.PerceiverAligner), AdamW.

Validated without the tool (seeds 0,1,2; 60 steps; batch 64; mean loss over the last 12 steps): fault
4.168 / 4.178 / 4.170 vs ln(64) = 4.159 (fails outright); fixed 0.270 / 0.332 / 0.264.
Ground truth: misaligned_pairs.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/real_faults (common.py)

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("sayakpaul/SimSiam-TF#1", "PeterL1n/BackgroundMattingV2#121")
CAUSE = "misaligned_pairs"
FAMILY = "data_labels"
BATCH = 64


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    tokens, texts = token_pairs(1024, seed=seed)
    torch.manual_seed(seed)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    TD, DL = torch.utils.data.TensorDataset, torch.utils.data.DataLoader
    if fixed:
        pairs = DL(TD(tokens, texts), batch_size=BATCH, shuffle=True, drop_last=True,
                   generator=torch.Generator().manual_seed(seed))
        batches = lambda: ((tok, txt) for tok, txt in pairs)
    else:
        image_loader = DL(TD(tokens), batch_size=BATCH, shuffle=True, drop_last=True,
                          generator=torch.Generator().manual_seed(seed))
        text_loader = DL(TD(texts), batch_size=BATCH, shuffle=True, drop_last=True,
                         generator=torch.Generator().manual_seed(seed + 1000))
        batches = lambda: ((tok, txt) for (tok,), (txt,) in zip(image_loader, text_loader))
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            for tok, txt in batches():
                if step >= steps:
                    break
                img, cap = model(tok, txt)
                logits = model.logit_scale.exp() * img @ cap.t()
                loss = clip_loss(logits)
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": cap}, logits=logits,
                          batch_size=BATCH, inputs=tok)
                opt.step()
                opt.zero_grad()
                step += 1


if __name__ == "__main__":
    import sys, diagnose; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + __import__("pathlib").Path(__file__).stem, **kw))
