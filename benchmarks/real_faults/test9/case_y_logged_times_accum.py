"""A user with 8-step gradient accumulation copies DeepSpeed's logging line (`loss.mean().item() *
gradient_accumulation_steps`) into a hand-written loop. There the logged loss had already been divided by the
accumulation steps; here `loss` is the undivided micro-batch mean (only the backward uses loss / ACCUM), so the
logged CLIP loss is 8x the objective: it sits near or above ln(B) while the model actually learns, and the user
goes hunting for a training bug. The threads: "it simply scales the last backward pass loss by number of gradient
accumulation steps"; "the batch loss value (which is a mean) is scaled by a factor 1/args.gradient_accumulation_steps.
To compare it to evaluation loss it is thus necessary to scale it back by multiplying".
Thread: deepspeedai/DeepSpeed#3367 ("[BUG][MINOR] noisy logging of loss"); huggingface/transformers#527 ("tr_loss is
not affected by args.gradient_accumulation_steps").
Fix: log `loss.detach()` (not multiplied by ACCUM).
Validated without the tool (seeds 0,1,2; 40 optimizer steps of 8 micro-batches; micro-batch 32; final = mean of
the last 5 logged steps): fault logged loss 2.914/3.488/2.637 (= 0.841/1.006/0.761 ln(32)); fixed 0.364/0.436/0.330
(0.105/0.126/0.095 ln(32)); the training itself is identical.
Ground truth: logging_misstates_loss.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("deepspeedai/DeepSpeed#3367", "huggingface/transformers#527")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"
BATCH = 32
ACCUM = 8


def train(watch, steps: int = 40, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.0)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            for micro in range(ACCUM):
                idx = torch.randint(0, len(tokens), (BATCH,))
                img, txt = model(tokens[idx], texts[idx])
                scale = model.logit_scale.exp()
                logits = scale * img @ txt.t()
                loss = clip_loss(logits)
                (loss / ACCUM).backward()
            # the engine's logging line, copied; here `loss` is the undivided micro-batch mean already
            logged = loss.detach() * ACCUM
            if fixed:
                logged = loss.detach()
            w.observe(step, losses={"clip": logged}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale})
            opt.step(); opt.zero_grad()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
