"""Hand-written decoupled weight decay, as the AdamW paper's Algorithm 2 writes it: after each Adam step
the weight matrices are multiplied by (1 - weight_decay), without the learning rate, with the CLIP-style
value weight_decay=0.1. That removes 10% of every matrix each step; the weights fall to a fraction of a
percent of their norm, every image maps to the same embedding and the loss settles at ln(B).
Thread: egg-west/AdamW-pytorch#1 ("the weight decay (w) is not multiplied by the learning rate (alpha) ...
I suggest changing the corresponding line to p.data.add_(torch.mul(p.data, group['weight_decay']) ...";
the reply: "I had to modify the weight decay significantly"); BVLC/caffe#1396 ("if the weight_decay is
large (like 0.5), all the weight will eventually becomes zero", under "Any input produce the same output").
Fix: decay by lr * weight_decay per step (what torch.optim.AdamW does).
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; final = mean of the last 5 steps): fault
final loss 4.159/4.159/4.159 = ln(64) (image embeddings all alike: mean cosine 1.00, decayed weight norm
0.07 against 27 when fixed); fixed 0.303/0.278/0.266.
Ground truth: weight_decay_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("egg-west/AdamW-pytorch#1", "BVLC/caffe#1396")
CAUSE = "weight_decay_collapse"
FAMILY = "weight_decay"
BATCH = 64
LR, WEIGHT_DECAY = 1e-3, 0.1


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = PerceiverAligner()
    # decay matrices and latents only (open_clip's exclusion: biases, norms, the logit scale)
    decay = [p for n, p in model.named_parameters()
             if p.ndim >= 2 and "norm" not in n and "logit_scale" not in n]
    opt = torch.optim.Adam(model.parameters(), lr=LR)  # decoupled decay applied by hand below
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
            with torch.no_grad():
                for p in decay:
                    p.mul_(1 - (LR * WEIGHT_DECAY if fixed else WEIGHT_DECAY))


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
