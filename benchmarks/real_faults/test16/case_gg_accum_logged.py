"""The user trains a Perceiver aligner with gradient accumulation (4 micro-batches of 32 per optimizer step). Each
micro-batch loss is divided by the accumulation count before backward, but the number put in the log adds up the
undivided micro-batch losses, so the logged loss is 4x the objective the optimizer sees: it starts above 4 ln(32)
and at the end still reads close to ln(32) while the model has learned its pairs.

Thread: huggingface/transformers#35204 ("currently logged loss doesn't divide gradient accumulation steps, so it will be bigger than expected")
Fix: divide each micro-batch loss by the accumulation steps before adding it to the logged loss.
Validated without the tool (seeds 0,1,2; 60 steps; batch 32 (x4 micro-batches); final = mean of the last 5 steps): fault final loss 2.8761/3.2127/3.0102 (= 0.830/0.927/0.869 ln(B)); fixed 0.7190/0.8032/0.7525 (= 0.207/0.232/0.217 ln(B)).
Ground truth: logging_misstates_loss.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import token_pairs, PerceiverAligner, clip_loss

THREADS = ("huggingface/transformers#35204",)
CAUSE = "logging_misstates_loss"
FAMILY = "logging"
BATCH = 32          # per micro-batch
ACCUM_STEPS = 4


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            opt.zero_grad()
            tr_loss = torch.zeros(())
            for micro in range(ACCUM_STEPS):
                idx = torch.randint(0, len(tokens), (BATCH,))
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                (loss / ACCUM_STEPS).backward()
                if fixed:
                    tr_loss = tr_loss + loss.detach() / ACCUM_STEPS
                else:
                    tr_loss = tr_loss + loss.detach()
            w.observe(step, losses={"clip": tr_loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
