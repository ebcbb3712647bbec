"""Pure fp16 training with Adam's default eps. To save memory the aligner is cast with `model.half()` and
trained with `torch.optim.Adam(model.parameters(), lr=1e-3)`; Adam keeps its moments in the parameters' dtype, so
eps=1e-8 rounds to exactly 0 in fp16 and `(1 - beta2) * grad**2` flushes to 0 for every gradient entry below
~8e-3. The denominator `sqrt(v) + eps` is then 0: entries with a small gradient get m/0 = inf, entries with a
zero gradient 0/0 = NaN, and the weights are non-finite after the first step. As the threads put it: "eps
(default 1e-8) is silently rounded to 0.0 when added to a float16 array ... the `sqrt(v) + eps` safety
denominator collapses to 0, producing 0 / 0 = NaN"; "This PR fixes the mnist example to use larger eps for
Adam optimizer to make it work in FP16 mode".
Thread: google-deepmind/optax#1754 ("Adam-family optimizers ... produce NaN on float16 zero-gradient steps");
chainer/chainer#6738 ("Use larger eps in mnist example").
Fix: `Adam(..., eps=1e-4)` (an eps representable in fp16).
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault: the loss is NaN from step 1/1/1 on all 3 seeds (non-finite weights after the first opt.step()); fixed 0.1761/0.1659/0.1774 (= 0.042/0.040/0.043 ln(B)).
Ground truth: nonfinite_divergence.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("google-deepmind/optax#1754", "chainer/chainer#6738")
CAUSE = "nonfinite_divergence"
FAMILY = "precision"
BATCH = 64


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    tokens, texts = tokens.half(), texts.half()
    model = ResamplerAligner(latents=8).half()  # "fp16 to halve memory"
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4 if fixed else 1e-8)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits.float())
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
