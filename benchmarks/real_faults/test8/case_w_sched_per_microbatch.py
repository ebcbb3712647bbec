"""Gradient accumulation with an LR schedule that is stepped on every micro-batch instead of on every optimizer
step. The user sizes a linear warm-down schedule (`LambdaLR`, lr -> 0 after `steps` updates) in optimizer updates,
accumulates 4 micro-batches per update (each micro-batch backpropagates the loss of 16 rows of the batch's 64x64
logit matrix, so every row is still scored against all 64 captions), but calls
`sched.step()` inside the micro-batch loop: the schedule runs 4x too fast and the learning rate is 0 after a quarter
of the run, before the aligner has learned anything. Lightning had this very bug: "right now the learning rate
schedule gets updated at every 'step' which actually corresponds to every forward pass ... standard learning rate
warmups of say 16000 steps would actually only warm up for 1000 steps if I set accumulate_grad_batches=16"; the same
in accelerate: "When training a model with gradient accumulation scheduler modifies learning rate at every step, even
when optimiser.step was not performed."
Thread: Lightning-AI/pytorch-lightning#1476 ("the learning rate schedule gets updated at every 'step' which actually
corresponds to every forward pass"); huggingface/accelerate#963 ("scheduler modifies learning rate at every step,
even when optimiser.step was not performed"); h2oai/h2o-llmstudio#663 ("Optimization step is happening only 10 times.
But here scheduler is called every time").
Fix: step the scheduler once per optimizer update (after `opt.step()`), not once per micro-batch.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
2.8034/3.6240/2.4402 (= 0.674/0.871/0.587 ln(64)); fixed 0.5118/0.6204/0.5080 (= 0.123/0.149/0.122 ln(64)).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, token_pairs, clip_loss

THREADS = ("Lightning-AI/pytorch-lightning#1476", "huggingface/accelerate#963", "h2oai/h2o-llmstudio#663")
CAUSE = "lr_schedule"
FAMILY = "gradient_accumulation"
BATCH = 64
ACCUM = 4


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.img = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.txt = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.img(tokens.mean(1)), dim=-1), F.normalize(self.txt(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(4096, seed=seed)
    model = Aligner()
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda u: max(0.0, 1 - u / steps))  # lr -> 0 at `steps` updates
    micro = BATCH // ACCUM
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            opt.zero_grad()
            for k in range(ACCUM):  # features of the whole batch, loss split in micro-batches of rows
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                rows = slice(k * micro, (k + 1) * micro)
                labels = torch.arange(BATCH)[rows]
                part = 0.5 * (F.cross_entropy(logits[rows], labels) + F.cross_entropy(logits.t()[rows], labels))
                (part / ACCUM).backward()
                if not fixed:
                    sched.step()  # BUG: once per micro-batch
            loss = clip_loss(logits)  # the whole batch's loss, for the log (parameters unchanged since the last pass)
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, extras={"logit_scale": model.logit_scale.exp(), "lr": opt.param_groups[0]["lr"]})
            opt.step()
            if fixed:
                sched.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
