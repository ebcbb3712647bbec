"""Pure fp16 training of a CLIP-style aligner to save memory: the user casts the whole model and the
inputs with `.half()` and keeps `torch.optim.Adam` at its default `eps=1e-8`. In float16, 1e-8 rounds to
zero and the second-moment estimate of small gradients underflows to zero, so Adam's update divides by
zero: after the first steps the weights hold inf/NaN and the contrastive loss is NaN from then on.

Thread: openai/CLIP#57 ("Using Adam, I got errors either nan or inf since attribute eps is hard to specify for Half")
Thread: pytorch/pytorch#8860 ("NaN loss when using half precision ... solve it by ... setting eps=1e-4")
Fix: `torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4)` (an eps representable in float16).
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss nan/nan/nan (non-finite from step 1/1/1); fixed 0.129/0.129/0.134 (= 0.03/0.03/0.03 ln(B)).
Ground truth: nonfinite_divergence.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("openai/CLIP#57", "pytorch/pytorch#8860")
CAUSE = "nonfinite_divergence"
FAMILY = "precision"
BATCH = 64


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = ResamplerAligner().half()
    tokens, texts = tokens.half(), texts.half()
    eps = 1e-4 if fixed else 1e-8  # the bug: the default eps=1e-8 is 0 in float16
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=eps)

    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            i = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[i], texts[i])
            scale = model.logit_scale.exp()
            logits = (scale * img @ txt.t()).float()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[i], extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
