"""The text tower (transformer and its projection) runs inside `with torch.no_grad()`, copied from a recipe
where the text side was a frozen pretrained encoder; here it is in the optimizer and meant to train, but
no gradient ever reaches it, so only the image side learns to chase fixed random caption vectors and the
loss stalls far above the run without the block. Threads: edreisMD/ConVIRT-pytorch#7 ("Text encoder was
freeze six layers, and linear wrapped in a 'with torch.no_grad()' block. loss may not get so low under
this setting ... delete with torch.no_grad(), the loss go down quickly"), rll-research/cic#5 ("the
observations are encoded inside torch.no_grad which means that there is no gradient calculation for the
CNN"). The fix: encode the captions outside `torch.no_grad()`.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64): fault final loss (mean of the last 5 steps)
3.33/3.17/3.21 vs ln(64) = 4.159; fixed 1.83/1.50/1.76.
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import contextlib

import torch
import torch.nn.functional as F
from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("edreisMD/ConVIRT-pytorch#7", "rll-research/cic#5")
CAUSE = "no_gradient_path"
FAMILY = "frozen_parts"
BATCH = 64


def _pooled(out):
    return out.pooler_output if hasattr(out, "pooler_output") else out  # transformers 5: an output object


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    model = tiny_clip(seed)
    pixels, captions = image_caption_pairs(1024, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(1024, generator=g)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            start = (step * BATCH) % 1024
            if start == 0 and step:
                order = torch.randperm(1024, generator=g)
            idx = order[start:start + BATCH]
            pix, ids = pixels[idx], captions[idx]
            img = F.normalize(_pooled(model.get_image_features(pixel_values=pix)), dim=-1)
            # the fault: the text tower is in the optimizer but runs under no_grad
            with (contextlib.nullcontext() if fixed else torch.no_grad()):
                txt = F.normalize(_pooled(model.get_text_features(input_ids=ids)), dim=-1)
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, extras={"logit_scale": scale})
            opt.step()
            opt.zero_grad()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
