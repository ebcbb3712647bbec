"""A user trains with an optimizer that has no schedule of its own (the fused-Adam path of the BERT examples) and
applies the warmup-linear schedule by hand each step, copying the example's line
`lr_this_step = lr * warmup_linear.get_lr(global_step / num_train_optimization_steps, warmup)`. The schedule object
was updated to take the *step* and divide by `t_total` itself, so the progress is divided twice: it never gets past
1/t_total, the schedule stays at the very start of its warmup, and the learning rate creeps from 0 to under a
tenth of its peak over the whole run. The weights barely move and the loss stays near ln(B). The issue: "my learning
rate of fp16 in run_classifier.py keeps increasing ... global_step/num_train_optimization_steps makes process
calculated again and when input process to WarmupLinearSchedule, it would be too small"; the fix PR: "removing
division to num_train_optimization_steps for new WarmupLinearSchedule".
Thread: huggingface/transformers#566 ("Bug in run_classifier.py fp16 learning rate"); huggingface/transformers#598
(the fix).
Fix: `lr_this_step = lr * warmup_linear.get_lr(global_step, warmup)` (the step, not the progress), as in #598.
Validated without the tool (seeds 0,1,2; 120 steps; batch 32; final = mean of the last 5 steps): fault final loss
3.568/3.425/3.293 (= 1.03/0.99/0.95 ln(B), ln(32) = 3.466); fixed 0.273/0.256/0.292 (= 0.08/0.07/0.08 ln(B), ln(32) = 3.466).
Ground truth: learning_rate_too_low.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("huggingface/transformers#566", "huggingface/transformers#598")
CAUSE = "learning_rate_too_low"
FAMILY = "optimizer_schedule"
BATCH = 32


class WarmupLinearSchedule:
    """pytorch_pretrained_bert's schedule after the update: takes the step, divides by t_total itself."""

    def __init__(self, warmup: float, t_total: int):
        self.warmup, self.t_total = warmup, t_total

    def get_lr(self, step, warmup=None):
        progress = step / self.t_total
        if progress < self.warmup:
            return progress / self.warmup
        return max((progress - 1.0) / (self.warmup - 1.0), 0.0)


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    learning_rate, warmup_proportion = 5e-4, 0.1
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    num_train_optimization_steps = steps
    warmup_linear = WarmupLinearSchedule(warmup=warmup_proportion, t_total=num_train_optimization_steps)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for global_step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(global_step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            if fixed:
                lr_this_step = learning_rate * warmup_linear.get_lr(global_step + 1, warmup_proportion)
            else:
                lr_this_step = learning_rate * warmup_linear.get_lr((global_step + 1) / num_train_optimization_steps,
                                                                    warmup_proportion)
            for param_group in opt.param_groups:
                param_group["lr"] = lr_this_step
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
