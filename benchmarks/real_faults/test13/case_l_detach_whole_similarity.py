"""A user aligns a trainable vision side (PerceiverResampler + projection) to a locked text tower and wants no gradient
to reach the text side, so the `.detach()` goes on the similarity instead of on the text features:
`logits = scale * (img @ txt.t()).detach()`. That cuts the whole similarity out of the graph: the only thing left with
a gradient is the logit scale, the resampler and the projection get none, and the loss never leaves ln(B) while the
scale drifts. The StreamVC issue is the same slip: the detach wraps the difference `torch.abs(fake - real).detach()`
rather than only the reference side, "I think we should perform detach only on `real[i][j]`, not on the difference
between real and fake".
Thread: yuval-reshef/StreamVC#3 ("Zero Gradient from Feature Loss").
Fix: detach only the locked side, `logits = scale * img @ txt.detach().t()`, as the thread proposes.
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss
4.964/4.710/4.843 (= 1.43/1.36/1.40 ln(B), ln(32) = 3.466); fixed 0.120/0.136/0.137 (= 0.03/0.04/0.04 ln(B), ln(32) = 3.466).
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("yuval-reshef/StreamVC#3",)
CAUSE = "no_gradient_path"
FAMILY = "frozen_parts"
BATCH = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    model.text.requires_grad_(False)                        # the locked text tower
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            if fixed:
                logits = scale * img @ txt.detach().t()
            else:
                logits = scale * (img @ txt.t()).detach()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
