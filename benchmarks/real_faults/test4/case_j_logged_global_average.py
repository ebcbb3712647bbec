"""The loss the user logs is a meter's global average, not the step's loss. The loop borrows the MetricLogger /
SmoothedValue meter of maskrcnn-benchmark / Detectron (a window median and `global_avg` = mean over every
iteration since the start) and hands `meter.global_avg` to its logger as the CLIP loss. The model trains
normally, but the logged curve is the running mean of the whole history, chance-level first steps included:
it sits several times above the objective the optimizer actually sees, and a flat-looking, high curve sends the
user hunting for a training bug. Thread: facebookresearch/maskrcnn-benchmark#531 ("loss values are median of
last 20 iterations and value in bracket contains global average of loss", "global average definately looks
more smooth and gives the impression of training", "How is it a good idea to average it out over all the
iterations?"; maintainer: "I'm using the global avg mainly because that's what there was in Detectron, but I
agree it smooths a lot the values").
Thread: facebookresearch/maskrcnn-benchmark#531.
Fix: log the step's loss (`logged = loss`) instead of `meter.global_avg`.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final
(logged) loss 1.0747/1.1480/1.0701 (= 0.258/0.276/0.257 ln(64)); fixed 0.2051/0.2499/0.2505 (= 0.049/0.060/0.060
ln(64)). The training itself is identical in both runs; only what is logged differs.
Ground truth: logging_misstates_loss.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from collections import deque
import statistics
import torch
from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("facebookresearch/maskrcnn-benchmark#531",)
CAUSE = "logging_misstates_loss"
FAMILY = "logging"
BATCH = 64


class SmoothedValue:
    """maskrcnn-benchmark's meter: median over a window, and the global average."""

    def __init__(self, window_size: int = 20):
        self.deque = deque(maxlen=window_size)
        self.total, self.count = 0.0, 0

    def update(self, value: float) -> None:
        self.deque.append(value)
        self.total += value
        self.count += 1

    @property
    def median(self) -> float:
        return statistics.median(self.deque)

    @property
    def global_avg(self) -> float:
        return self.total / self.count


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    meter = SmoothedValue()
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            meter.update(loss.item())
            logged = loss if fixed else meter.global_avg
            w.observe(step, losses={"clip": logged}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
