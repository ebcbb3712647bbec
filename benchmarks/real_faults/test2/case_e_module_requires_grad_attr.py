"""Freeze-then-unfreeze with the wrong call: the script freezes the whole aligner with
`model.requires_grad_(False)` (the resampler is meant to stay frozen) and then "unfreezes" the image
projection and the text head with `module.requires_grad = True`. On an nn.Module that only sets a Python
attribute; the parameters stay frozen. The optimizer is built from the parameters that require grad, which
is the logit scale alone, so nothing on the path from the inputs to the embeddings ever trains and the loss
stays at chance. Thread: CSCYQJ/MICCAI23-ProtoContra-SFDA#18 ("`self.model.outc.requires_grad = False` ...
But outc is nn.module ... this **does not** freeze the last layer"; the same attribute does not unfreeze
either). Fix: `module.requires_grad_(True)`.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; final = mean of the last 5 steps): fault
final loss 4.260/4.334/5.412 vs ln(64) = 4.159; fixed 0.197/0.166/0.257.
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("CSCYQJ/MICCAI23-ProtoContra-SFDA#18",)
CAUSE = "no_gradient_path"
FAMILY = "frozen_parts"
BATCH = 64


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = ResamplerAligner()
    model.requires_grad_(False)  # keep the (pretrained) resampler frozen ...
    for head in (model.proj, model.text):  # ... and train the heads
        if fixed:
            head.requires_grad_(True)
        else:
            head.requires_grad = True
    model.logit_scale.requires_grad = True
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
