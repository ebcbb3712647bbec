"""A frozen-backbone alignment loop where the `with torch.no_grad():` block meant for the frozen vision backbone
also wraps the call to the trainable part: `model.encode_image` (the Perceiver resampler + image projection) runs
inside the block, so its output has no grad_fn and the resampler and projection never receive a gradient. The text
projection is frozen by design (the image side is aligned to a frozen text embedding space), so the only parameter
left on the graph is logit_scale: backward runs without an error, the optimizer steps, and the loss stays above
ln(B) (random, fixed embeddings at scale 14.3). Users freeze encoders exactly this way ("I want to freeze some modules
using the command with torch.no_grad"; "the training buffer is created with eval() mode and no_grad() before running
the training, so when doing the actual training of MLP head, it doesn't have gradient in the encoder's parameters")
and report the symptom "freeze() prevents gradients in non-frozen layers ... the loss ceases to be differentiable";
here the trainable layers silently stop learning instead of raising, because logit_scale keeps the loss
differentiable.
Thread: open-mmlab/OpenPCDet#845 ("I want to freeze some modules using the command with torch.no_grad");
nianticlabs/ace#28 ("it doesn't have gradient in the encoder's parameters"); Lightning-AI/pytorch-lightning#11112
("freeze() prevents gradients in non-frozen layers").
Fix: call `model.encode_image(feats)` after the `no_grad` block (only the frozen backbone inside it).
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
5.931/4.726/6.253 (= 1.426/1.136/1.504 ln(64)); fixed 0.227/0.219/0.252 (= 0.055/0.053/0.061 ln(64)).
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from torch import nn
from common import ResamplerAligner, token_pairs, clip_loss, D

THREADS = ("open-mmlab/OpenPCDet#845", "nianticlabs/ace#28", "Lightning-AI/pytorch-lightning#11112")
CAUSE = "no_gradient_path"
FAMILY = "frozen_parts"
BATCH = 64


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    g = torch.Generator().manual_seed(seed)
    backbone = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, D))  # stand-in for the frozen vision backbone's last block
    backbone.requires_grad_(False).eval()
    model = ResamplerAligner()                 # trainable: resampler + image projection (+ logit scale)
    model.text.requires_grad_(False)           # by design: align to a frozen text embedding space
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            tok, txt_in = tokens[idx], texts[idx]
            with torch.no_grad():              # "frozen backbone: no activations, no grads"
                feats = backbone(tok)
                if not fixed:
                    img = model.encode_image(feats)   # the bug: the trainable resampler + proj run inside the block
            if fixed:
                img = model.encode_image(feats)       # the fix: only the frozen backbone under no_grad
            img = F.normalize(img, dim=-1)
            txt = F.normalize(model.text(txt_in), dim=-1)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=feats)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
