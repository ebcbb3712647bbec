"""Gradient accumulation where the loss sent to the logger is the SUM of the micro-batch losses, not their
mean: the backward pass is right (each micro-batch loss is divided by the accumulation count before
`backward`), but the scalar reported per optimizer step adds up the raw micro-batch losses, so the curve the
user watches sits ACCUM times above the objective actually optimised and looks like a run stuck far above
chance. The public report: NVIDIA/physicsnemo#412 ("an accumulated loss is computing in an additive manner
across all steps in the num_accumulation_rounds. This lose should be divided by the value of
num_accumulation_rounds to get the mean rather than the sum of loss to be recorded to wandb:
`loss_accum += loss/num_accumulation_rounds`").
Thread: NVIDIA/physicsnemo#412 ("This lose should be divided by the value of num_accumulation_rounds to get
the mean rather than the sum of loss to be recorded").
Fix: `loss_accum += loss.detach() / ACCUM` instead of `loss_accum += loss.detach()`.
Validated without the tool (seeds 0,1,2; 40 steps; batch 32; final = mean of the last 5 steps): fault final loss
1.373/1.609/1.343 (= 0.396/0.464/0.387 x ln(32) = 3.466); fixed 0.172/0.201/0.168 (= 0.050/0.058/0.048 x ln(32)).
Ground truth: logging_misstates_loss.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("NVIDIA/physicsnemo#412",)
CAUSE = "logging_misstates_loss"
FAMILY = "logging"
BATCH = 32
ACCUM = 8


def train(watch, steps: int = 40, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            opt.zero_grad()
            loss_accum = 0.0
            for micro in range(ACCUM):
                idx = torch.randint(0, len(tokens), (BATCH,))
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                (loss / ACCUM).backward()
                if fixed:
                    loss_accum += loss.detach() / ACCUM
                else:
                    loss_accum += loss.detach()   # summed over micro-batches: ACCUM x the objective
            w.observe(step, losses={"clip": loss_accum}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
