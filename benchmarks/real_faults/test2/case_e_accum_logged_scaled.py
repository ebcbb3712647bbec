"""Gradient accumulation: the loss is divided by the number of accumulation steps before backward, and
that divided value is what gets logged, so the logged CLIP loss is a quarter of the real one and sits
below ln(B) from the very first step ("the loss has the wrong scale when using
gradient_accumulation_steps. This makes it confusingly low in comparison to the valid loss",
pytorch/ignite#2707; "When accumulate_grad_batches >= 1, logging loss is divided by
accumulate_grad_batches", Lightning-AI/pytorch-lightning#2569). Training itself is correct; only the
number reported for it is wrong. Fix: log the loss times the accumulation steps (divide only for backward).
Validated without the tool (seeds 0,1,2; 60 optimizer steps of 4 micro-batches of 64): logged loss
1.137/1.120/1.487 at step 0 (below ln 64 = 4.159 before any update) and 0.042/0.037/0.045 at the end
(mean of the last 5 steps), while the CLIP loss of the very logits it was computed from is
4.547/4.478/5.947 at step 0 and 0.166/0.148/0.181 at the end; fixed: the logged loss equals it
(4.547/4.478/5.947 -> 0.166/0.148/0.181).
Ground truth: logging_misstates_loss.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("pytorch/ignite#2707", "Lightning-AI/pytorch-lightning#2569")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"
BATCH = 64
ACCUM = 4


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            for micro in range(ACCUM):
                idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits) / ACCUM  # scaled for accumulation ...
                loss.backward()
            logged = loss.detach() * ACCUM if fixed else loss.detach()  # ... and logged as is
            w.observe(step, losses={"clip": logged}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp()})
            opt.step()
            opt.zero_grad()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
