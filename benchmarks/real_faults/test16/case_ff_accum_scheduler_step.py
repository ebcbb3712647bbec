"""The user accumulates gradients over 4 micro-batches of 64 (an effective batch of 256) and sizes the
linear warm-up/decay schedule in optimizer updates (100 micro-batches / 4 = 25), but calls scheduler.step()
after every micro-batch, as in the usual loop. The schedule runs 4x too fast: the learning rate is back at 0
after about 6 of the 25 updates, and the loss stops falling far above where it should end.

Thread: huggingface/accelerate#963 ("scheduler modifies learning rate at every step, even when `optimiser.step` was not performed"); Lightning-AI/pytorch-lightning#1476
Fix: call scheduler.step() only on the micro-batches where optimizer.step() runs.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss 4.193/3.242/2.877 (= 1.008/0.779/0.692 ln(B)); fixed 1.666/0.977/0.842 (= 0.401/0.235/0.203 ln(B)).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from transformers import get_linear_schedule_with_warmup
from common import token_pairs, ResamplerAligner, clip_loss

THREADS = ("huggingface/accelerate#963", "Lightning-AI/pytorch-lightning#1476")
CAUSE = "lr_schedule"
FAMILY = "gradient accumulation"
BATCH = 64
ACCUM = 4


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(4096, seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1.5e-3, weight_decay=0.0)
    updates = steps // ACCUM
    scheduler = get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=updates)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            (loss / ACCUM).backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            if (step + 1) % ACCUM == 0:
                opt.step()
                opt.zero_grad()
                if fixed:
                    scheduler.step()
            if not fixed:
                scheduler.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
