"""A user adapts the fp16 branch of the old pytorch-pretrained-BERT example scripts to a frozen-backbone aligner: the
plain AdamW they use has no schedule of its own, so, as the example did, they keep a `WarmupLinearSchedule(warmup=0.1,
t_total=num_train_optimization_steps)` and set the learning rate by hand every step:
`lr_this_step = args.learning_rate * warmup_linear.get_lr(global_step / num_train_optimization_steps, ...)`. After the
library's schedule API changed, `get_lr` takes the absolute step and divides by `t_total` itself, so the progress is
divided twice: the schedule sees step/t_total**2, never leaves the first tenth of its warm-up, and the learning rate
crawls from 0 to under a tenth of its peak over the whole run. The weights barely move and the loss stays near ln(B).
The transformers issue: "In this function, the first argument should be step, and
global_step/num_train_optimization_steps makes process calculated again and when input process to
WarmupLinearSchedule, it would be too small"; the earlier fix PR: "The current version might lead the LR never leaving
the warmup phase".
Thread: huggingface/transformers#566 ("global_step/num_train_optimization_steps makes process calculated again ... it
would be too small"); huggingface/transformers#598 (the fix, "removing division to num_train_optimization_steps for
new WarmupLinearSchedule").
Fix: pass the absolute step, `warmup_linear.get_lr(global_step)`, as the PR does.
Validated without the tool (seeds 0,1,2; 150 steps; batch 32; final = mean of the last 5 steps): fault final loss
3.584/3.281/3.374 (= 1.03/0.95/0.97 ln(B), ln(32) = 3.466); fixed 0.224/0.196/0.266 (= 0.06/0.06/0.08 ln(B), ln(32) =
3.466).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("huggingface/transformers#566", "huggingface/transformers#598")
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 32
LR = 5e-4


class WarmupLinearSchedule:
    """pytorch-pretrained-BERT's schedule after its API change: `get_lr(step)` takes the absolute step."""

    def __init__(self, warmup=0.1, t_total=-1):
        self.warmup, self.t_total = warmup, t_total

    def get_lr(self, step, nowarn=False):
        progress = float(step) / self.t_total
        if progress < self.warmup:
            return progress / self.warmup
        return max((progress - 1.0) / (self.warmup - 1.0), 0.0)


def train(watch, steps: int = 150, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    num_train_optimization_steps = steps
    warmup_linear = WarmupLinearSchedule(warmup=0.1, t_total=num_train_optimization_steps)
    g = torch.Generator().manual_seed(seed)
    global_step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            if fixed:
                lr_this_step = LR * warmup_linear.get_lr(global_step)
            else:
                lr_this_step = LR * warmup_linear.get_lr(global_step / num_train_optimization_steps)
            for param_group in opt.param_groups:
                param_group["lr"] = lr_this_step
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()
            global_step += 1


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
