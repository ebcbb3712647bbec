"""Hand-written decoupled weight decay. To keep biases, norms and the logit scale out of the decay (the open_clip
rule), the user keeps plain Adam and applies the AdamW-style decay to the weight matrices after each step, with the
CLIP recipe's weight_decay = 0.2, but writes `p.mul_(1 - wd)` instead of `p.mul_(1 - lr * wd)`. Every matrix is then
shrunk by 20 % per step while Adam can only move it by about lr = 5e-4 per step: within a few dozen steps the
resampler and projection weights are ~0, the embeddings are the (undecayed) biases, the same vector for every input,
and the loss sits at ln(B). This is the bug of FluxML/Optimisers.jl#182 ("AdamW optimizer implemented incorrectly -
weight decay does not incorporate learning rate ... In AdamW, and indeed in PyTorch, the WeightDecay value needs to
be multiplied by the learning rate too ... I was observing extreme misbehavior from the model I've been trying to
port from PyTorch") and FluxML/Flux.jl#1612 ("Also fixes AdamW, which was doing something totally wrong").
Thread: FluxML/Optimisers.jl#182 ("weight decay does not incorporate learning rate"); FluxML/Flux.jl#1612.
Fix: `p.mul_(1 - LR * WEIGHT_DECAY)`.
Validated without the tool (seeds 0,1,2; 100 steps; batch 128; final = mean of the last 5 steps): fault final loss
4.852/4.852/4.852 (= 1.000/1.000/1.000 ln(128), image and text cosines 1.0); fixed 0.318/0.269/0.265
(= 0.066/0.056/0.055 ln(128)).
Ground truth: weight_decay_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("FluxML/Optimisers.jl#182", "FluxML/Flux.jl#1612")
CAUSE = "weight_decay_collapse"
FAMILY = "weight_decay"
BATCH = 128
LR = 5e-4
WEIGHT_DECAY = 0.2  # CLIP's AdamW value


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(4096, seed)
    model = ResamplerAligner()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]  # no decay on biases, norms, logit_scale
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale})
            opt.step()
            with torch.no_grad():  # decoupled weight decay, AdamW style
                for p in decay:
                    if fixed:
                        p.mul_(1 - LR * WEIGHT_DECAY)
                    else:
                        p.mul_(1 - WEIGHT_DECAY)


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
