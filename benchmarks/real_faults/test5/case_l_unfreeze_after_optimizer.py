"""Two-stage fine-tuning: the user freezes the image side (resampler + projection) for a short warm-up,
builds the optimizer the usual way with `filter(lambda p: p.requires_grad, ...)`, and sets `requires_grad=True`
again after the warm-up. The optimizer only ever received the parameters that were trainable when it was built,
so after unfreezing the image side gets gradients every step but nothing updates it; only the text head moves.
Thread: skorch-dev/skorch#261 ("The pytorch `Optimizer` class only checks `require_grad` during initialization");
pytorch/pytorch#7338 (`Adam(filter(lambda p: p.requires_grad, model.parameters()), lr=1e-3)`; "the optimizers
won't try to optimize over parameters that don't have `requires_grad`").
Fix: build the optimizer over all of `model.parameters()` (or rebuild it after unfreezing).
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
1.5522/1.8991/1.4438 (= 0.373/0.457/0.347 ln(B), ln(B) = 4.1589); fixed 0.1529/0.1435/0.1705 (= 0.037/0.035/0.041 ln(B), ln(B) = 4.1589).
The fault run learns partly (the text head alone chases a random image side) but ends ~10x above the fix.
Ground truth: param_not_in_optimizer.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, token_pairs, clip_loss

THREADS = ("skorch-dev/skorch#261", "pytorch/pytorch#7338")
CAUSE = "param_not_in_optimizer"
FAMILY = "frozen_parts"
BATCH = 64
WARMUP = 10


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    image_side = list(model.resampler.parameters()) + list(model.proj.parameters())
    for p in image_side:
        p.requires_grad = False  # warm-up: text head only
    params = model.parameters() if fixed else filter(lambda p: p.requires_grad, model.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            if step == WARMUP:
                for p in image_side:
                    p.requires_grad = True  # unfreeze the image side
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
