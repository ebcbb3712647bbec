"""Gradient accumulation written by hand (4 micro-batches of 32 per optimizer step) with a linear-decay
LambdaLR sized for the number of optimizer updates, but `sched.step()` is called inside the micro-batch loop,
as accelerate did before its fix. The schedule advances 4x too fast and holds the learning rate at 0 after a
quarter of the updates: the model stops where it was after ~7 updates, far from learned. The threads: a PR
"Fix scheduler incorrect steps when gradient accumulation enabled" ("I added if-statement to check that optimizer
step was made"), and determined-ai's "fix: lr_scheduler step when using gradient_aggregation" ("never step lr
when we aren't stepping the optimizer").
Thread: huggingface/accelerate#999 ("Fix scheduler incorrect steps when gradient accumulation enabled");
determined-ai/determined#2271 ("lr_scheduler step when using gradient_aggregation").
Fix: call `sched.step()` once per optimizer step, after `opt.step()`.
Validated without the tool (seeds 0,1,2; 30 optimizer steps of 4 micro-batches; micro-batch 32; final = mean of
the last 5 steps of the accumulated loss): fault final loss 2.386/2.363/2.328 (= 0.688/0.682/0.672 ln(32)); fixed
0.435/0.499/0.408 (0.126/0.144/0.118 ln(32)).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("huggingface/accelerate#999", "determined-ai/determined#2271")
CAUSE = "lr_schedule"
FAMILY = "gradient_accumulation"
BATCH = 32  # micro-batch: the logits of each forward are (32, 32)
ACCUM = 4


def train(watch, steps: int = 30, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))  # linear decay over `steps` updates
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            total = 0.0
            for micro in range(ACCUM):
                idx = torch.randint(0, len(tokens), (BATCH,))
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                (loss / ACCUM).backward()
                total += loss.detach() / ACCUM
                if not fixed:
                    sched.step()  # stepped with every micro-batch: the decay ends after steps / ACCUM updates
            w.observe(step, losses={"clip": total}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH)
            opt.step(); opt.zero_grad()
            if fixed:
                sched.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
