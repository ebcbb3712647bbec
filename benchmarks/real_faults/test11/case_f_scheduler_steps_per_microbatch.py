"""Scheduler stepped on micro-batches under gradient accumulation: the user accumulates 4 micro-batches of 32 pairs
per optimizer update and sizes a linear-decay LambdaLR in optimizer updates (steps // ACCUM), but calls
`scheduler.step()` after every micro-batch, next to the backward. The schedule runs ACCUM times too fast: the
learning rate reaches zero after a quarter of the planned updates and the remaining three quarters of training
apply updates of size zero, so the projector stops where it was after a handful of small steps.
Thread: Lightning-AI/pytorch-lightning#12894 ("When using the accumulate_grad_batches flag ... For the
accumulate_grad_batches = 4, the LR decayed faster"); huggingface/accelerate#995 ("Custom LR Scheduler + accelerate.accumulate does not enforce
gradient accumulation": "the LR scheduler changes the LR after each" step); huggingface/diffusers#2632 ("lr schedulers
configuration not taking into account gradient accumulation correctly").
Fix: call `sched.step()` only after `opt.step()` (once per ACCUM micro-batches).
Validated without the tool (seeds 0,1,2; 120 micro-steps = 30 updates; micro-batch 32, the batch each loss is
computed on; final = mean of the last 5 micro-steps): fault final loss 2.057/2.331/3.031 (= 0.593/0.672/0.875 x ln(B), ln(B) = 3.466); fixed 0.424/0.428/0.757 (= 0.122/0.123/0.218 x ln(B), ln(B) = 3.466).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, token_pairs, clip_loss

THREADS = ("Lightning-AI/pytorch-lightning#12894", "huggingface/accelerate#995", "huggingface/diffusers#2632")
CAUSE = "lr_schedule"
FAMILY = "gradient_accumulation"
BATCH = 32   # micro-batch: the pairs each contrastive loss is computed on
ACCUM = 4


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    updates = steps // ACCUM
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / updates))
    with watch(model, opt, batch_size=BATCH) as w:
        opt.zero_grad()
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            (loss / ACCUM).backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH)
            if not fixed:
                sched.step()
            if (step + 1) % ACCUM == 0:
                opt.step(); opt.zero_grad()
                if fixed:
                    sched.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
