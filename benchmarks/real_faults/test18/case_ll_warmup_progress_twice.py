"""A user trains a Perceiver image->text aligner with a plain Adam and, like the BERT examples' fp16 path
(FusedAdam has no schedule of its own), sets the learning rate by hand every step from a
`WarmupLinearSchedule(warmup, t_total)`. After the schedule's API changed from taking the training
progress to taking the step (it divides by t_total itself), the loop still passes
`global_step / num_train_optimization_steps`: the progress is divided by t_total twice, the schedule
believes the run has barely started, and the lr stays deep in its warm-up (about 1% of its peak at most).
The reporter's learning rate "keeps increasing" and a commenter's loss sits at chance (2.30 = ln 10)
for thousands of batches; here the contrastive loss sits at its start, above ln(B), for the whole run.
Thread: huggingface/transformers#566 ("global_step/num_train_optimization_steps makes process calculated
again and when input process to WarmupLinearSchedule, it would be too small"), fixed by
huggingface/transformers#598 ("removing division to num_train_optimization_steps").
Fix: pass the step itself to the schedule: `schedule.get_lr(global_step)`.
Validated without the tool (seeds 0,1,2; 120 steps; batch 32; final = mean of the last 5 steps): fault final
loss 4.4436/4.6737/4.3874 (= 1.282/1.349/1.266 ln(B), ln(32) = 3.4657); fixed 0.1470/0.1896/0.1426
(= 0.042/0.055/0.041 ln(B)).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import token_pairs, PerceiverAligner

THREADS = ("huggingface/transformers#566", "huggingface/transformers#598")
CAUSE = "lr_schedule"
FAMILY = "schedules"
BATCH = 32
N_TRAIN = 1024
EPOCHS = 10
LR = 1e-3
WARMUP_PROPORTION = 0.1


class WarmupLinearSchedule:
    """Linear warm-up over `warmup` of t_total, then linear decay to 0 (pytorch-pretrained-bert 0.6.2 API:
    get_lr takes the optimizer step and returns the multiplier of the base lr)."""

    def __init__(self, warmup: float = 0.1, t_total: int = -1):
        self.warmup, self.t_total = warmup, t_total

    def get_lr(self, step: float) -> float:
        progress = step / self.t_total
        if progress < self.warmup:
            return progress / self.warmup
        return max((progress - 1.0) / (self.warmup - 1.0), 0.0)


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(N_TRAIN, seed=seed)
    model = PerceiverAligner()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    num_train_optimization_steps = (N_TRAIN // BATCH) * EPOCHS
    schedule = WarmupLinearSchedule(warmup=WARMUP_PROPORTION, t_total=num_train_optimization_steps)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(N_TRAIN, generator=g)
    labels = torch.arange(BATCH)
    with watch(model, opt, batch_size=BATCH) as w:
        for global_step in range(steps):
            start = (global_step * BATCH) % N_TRAIN
            if start == 0 and global_step:
                order = torch.randperm(N_TRAIN, generator=g)
            idx = order[start:start + BATCH]
            if fixed:
                lr_this_step = LR * schedule.get_lr(global_step)
            else:  # as in the example scripts' fp16 branch
                lr_this_step = LR * schedule.get_lr(global_step / num_train_optimization_steps)
            for group in opt.param_groups:
                group["lr"] = lr_this_step
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            opt.zero_grad()
            loss.backward()
            w.observe(global_step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      targets=labels, batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
