"""SGD weight decay copied from the cifar10-fast recipe, `weight_decay=5e-4*batch_size`, into a loop whose
loss is the usual batch mean (cifar10-fast sums the loss over the batch and divides the lr by the batch size, so there
the product is a per-sample decay). With batch 256 the decay is 0.128 at lr 0.05 and momentum 0.9, a pull of ~6% per
step on every weight matrix (biases and norms sit in a no-decay group, as in the usual decay/no_decay split): on seed 0
proj.weight goes 3.29 -> 0.97, the resampler latents 15.0 -> 0.10 and its first to_q 2.34 -> 0.015, while the
undecayed biases grow (proj.bias 0.63 -> 1.77). What the image and text embeddings still vary in no longer lines up:
at the end every row of the logits is constant (std 5e-8) and the loss sits exactly at ln(B). The thread: "`opt = SGD(trainable_params(model),
momentum=0.9, weight_decay=5e-4*batch_size, nesterov=True)` multiply 5e-4 by batch_size is redundant."
Thread: davidcpage/cifar10-fast#9 ("weight_decay=5e-4*batch_size ... multiply 5e-4 by batch_size is redundant").
Fix: `weight_decay=5e-4` (the per-parameter value for a mean-reduced loss).
Validated without the tool (seeds 0,1,2; 80 steps; batch 256; final = mean of the last 5 steps): fault final loss
5.5452/5.5452/5.5452 (= 1.000 ln(256) on each seed); fixed 0.1531/0.1810/0.1430 (0.028/0.033/0.026 ln(256)).
Ground truth: weight_decay_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, token_pairs, clip_loss

THREADS = ("davidcpage/cifar10-fast#9",)
CAUSE = "weight_decay_collapse"
FAMILY = "regularisation"
BATCH = 256


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    wd = 5e-4 if fixed else 5e-4 * BATCH   # the bug: cifar10-fast's per-sample decay, with a mean-reduced loss
    opt = torch.optim.SGD([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=0.05, momentum=0.9)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
