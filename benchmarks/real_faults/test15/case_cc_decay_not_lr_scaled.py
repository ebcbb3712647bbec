"""A user writes decoupled weight decay by hand in a CLIP loop (Adam for the update, then shrink every
parameter after `opt.step()`), taking an AdamW-style weight decay (0.1) as the per-step shrink factor:
`p.mul_(1 - wd)`. AdamW multiplies the decay by the learning rate (`1 - lr * wd`); without it every weight
loses 10% per step while Adam moves it by ~lr, so the weights are held near zero and the loss stays at
chance (fixed temperature 0.07, as in the user's loss).

Thread: mlfoundations/open_clip#32 ("careful to distinguish between ... (weight decay * learning rate) or just straight weight decay to the parameters not scaled by learning rate")
Thread: openai/CLIP#150 ("When I changed the weight decay from 0.2 to 0.001, it works well")
Fix: `p.mul_(1 - LR * WD)` (decoupled decay scaled by the learning rate, as AdamW does).
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss 4.221/4.255/4.185 (= 1.01/1.02/1.01 ln(B)); fixed 0.133/0.135/0.137 (= 0.03/0.03/0.03 ln(B)).
Ground truth: weight_decay_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("mlfoundations/open_clip#32", "openai/CLIP#150")
CAUSE = "weight_decay_collapse"
FAMILY = "weight_decay"
BATCH = 64
LR, WD, TEMPERATURE = 1e-3, 0.1, 0.07


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = ResamplerAligner()
    model.logit_scale.requires_grad_(False)  # the user's loss uses a fixed temperature
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=LR)

    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            i = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[i], texts[i])
            logits = img @ txt.t() / TEMPERATURE
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[i])
            opt.step()
            with torch.no_grad():  # decoupled weight decay, by hand
                for p in params:
                    p.mul_(1 - (LR * WD if fixed else WD))  # the bug: the shrink is not scaled by the lr


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
