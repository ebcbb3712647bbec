"""Pure half-precision training: to save memory the user casts the whole aligner to fp16 (`model.half()`, inputs
too) and keeps torch.optim.Adam with its default eps=1e-8. In fp16, 1e-8 rounds to 0 and most squared gradients
(~1e-6..1e-10) underflow, so Adam's denominator sqrt(v)+eps is exactly 0 for many weights while the first moment is
not: the first update divides by zero, the weights become inf/NaN, and every loss after it is NaN. spconv#513: "the
tensors in the model went to NAN. A solution was to increase the default eps parameters of BatchNorm and Adam / AdamW
to higher F16 compatible values ... eps AdamW = 1e-4"; dfdx#748: "When I use half precision ... the weights are updated
to be NaN, even though valid (non NaN) gradients are used"; mxnet#5384: "the Adam optimizer sometimes(!) produces nan
weights/scores, whereas SGD seems to work fine".
Thread: traveller59/spconv#513 ("increase the default eps ... Adam / AdamW to higher F16 compatible values");
chelsea0x3b/dfdx#748 ("weights are updated to be NaN, even though valid (non NaN) gradients are used");
apache/mxnet#5384 ("the Adam optimizer sometimes(!) produces nan weights").
Fix: Adam(eps=1e-4), an eps fp16 can represent.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; final = mean of the last 5 steps): fault final loss
NaN on all 3 seeds (first non-finite loss at step 1, right after the first Adam update); fixed 0.2120/0.2169/0.2041
(0.051/0.052/0.049 ln(64)).
Ground truth: nonfinite_divergence.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("traveller59/spconv#513", "chelsea0x3b/dfdx#748", "apache/mxnet#5384")
CAUSE = "nonfinite_divergence"
FAMILY = "precision"
BATCH = 64


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    tokens, texts = tokens.half(), texts.half()
    model = ResamplerAligner().half()                     # fp16 weights, no fp32 master copy, no GradScaler
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4 if fixed else 1e-8)   # the fix: eps=1e-4
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
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
