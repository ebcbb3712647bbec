"""CLIP's weight decay copied into SGD. The user builds open_clip-style parameter groups (decay on the weight
matrices, none on biases, gains and the logit scale) and takes weight_decay=0.2 from the CLIP paper / open_clip
defaults, but trains with SGD + momentum 0.9 at lr 0.05. For AdamW 0.2 is a decay of lr*0.2 per step on top of a
normalised update; in SGD the decay is an L2 gradient 0.2*w amplified by momentum (about lr*wd/(1-m) = 10% of the
weights per step). The loss first falls fast, then the weight matrices shrink ~50x while the undecayed biases stay,
so every projection output points along its bias: the image embeddings collapse to one direction and the loss
locks at exactly ln(B). Thread: mlfoundations/open_clip#32 ("Why is Weight decay so large? (The default 0.2 or
0.1) Usually is 1e4"; "that is also the value mentioned in the the CLIP paper, and is also close to the default
AdamW weight decay ... I believe values ~ 1e-4 are used for SGD"; "be careful to distinguish between when people
say weight decay meaning (weight decay * learning rate) or just straight weight decay").
Thread: mlfoundations/open_clip#32.
Fix: weight_decay=5e-4 (an SGD-sized decay) for the decay group.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.1589/4.1589/4.1589 (= 1.000/1.000/1.000 ln(64)); fixed 0.0365/0.0219/0.0740 (= 0.009/0.005/0.018 ln(64)).
Seed 0 fault, by hand: loss 0.30 at step 10, 0.17 at step 20, 4.15 from step 30 on; decayed weights' norm 24 -> 0.43,
mean image-image cosine in the last batch 0.98.
Ground truth: weight_decay_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("mlfoundations/open_clip#32",)
CAUSE = "weight_decay_collapse"
FAMILY = "weight_decay"
BATCH = 64


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    # open_clip's exclusion rule: no decay on gains, biases and the logit scale
    exclude = lambda n, p: p.ndim < 2 or "bias" in n or "norm" in n or "logit_scale" in n
    decay = [p for n, p in model.named_parameters() if not exclude(n, p)]
    no_decay = [p for n, p in model.named_parameters() if exclude(n, p)]
    wd = 5e-4 if fixed else 0.2
    opt = torch.optim.SGD([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=0.05, momentum=0.9)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
