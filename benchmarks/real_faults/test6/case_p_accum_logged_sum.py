"""A user adds gradient accumulation (4 micro-batches of 32 per optimizer step) to fit a larger effective
batch. The backward pass is scaled correctly (`(loss / ACCUM).backward()`), but the number written to the
logger is the running sum of the 4 micro-batch losses, never divided by ACCUM. The logged CLIP loss starts
near 4 x ln(32) ~ 13.9 (16.6-18.3 measured) and ends at 0.73-0.85 x ln(32) although each micro-batch's
loss is 0.2 x ln(32): the user concludes the model barely learns and starts changing the model.
Thread: huggingface/transformers#37766 ("As gradient_accumulation_steps increases, the loss also
increases"); huggingface/transformers#35438 ("the loss for `gradient_accumulation_steps=2` is errornously
doubled").
Fix: log `running / ACCUM` (the mean over the micro-batches).
Validated without the tool (seeds 0,1,2; 60 optimizer steps of 4 x 32; batch 32 per loss; final = mean of the
last 5 steps): fault final loss 2.5251/2.9329/2.8611 (= 0.729/0.846/0.826 x ln(32) = 3.4657); fixed 0.6313/0.7332/0.7153 (= 0.182/0.212/0.206 x ln(32) = 3.4657).
Ground truth: logging_misstates_loss.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("huggingface/transformers#37766", "huggingface/transformers#35438")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"
BATCH = 32   # per micro-batch: each row is scored against these 32 captions
ACCUM = 4
LR = 3e-4


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            opt.zero_grad()
            running = 0.0
            for micro in range(ACCUM):
                idx = torch.randint(0, len(texts), (BATCH,), generator=g)
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                (loss / ACCUM).backward()
                running = running + loss.detach()
            logged = running / ACCUM if fixed else running  # fault: the sum over the micro-batches
            w.observe(step, losses={"clip": logged}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, extras={"logit_scale": model.logit_scale.exp().detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
