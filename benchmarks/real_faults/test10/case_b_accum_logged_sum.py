"""Gradient accumulation over 16 micro-batches of 16 pairs: each micro-batch's CLIP loss is divided by 16
before `backward()` (the update is right), but the number the loop reports is the running sum `logged +=
loss.detach()` of the undivided micro-batch losses, so the logged "clip" loss is 16x the objective. The curve
starts at ~16 ln(B), falls, and then looks stuck at 0.6-0.7 ln(B) of a 16-pair micro-batch, while the model behind
it aligns fine. The threads report
the same accounting error: a MaxText user points out that a loss "summed through gradient accumulation" "should be
divided by config.gradient_accumulation_steps for reporting", and lightly-train changed its logging to the "mean of
train loss over gradient accumulation steps ... This way the logged train loss is independent of the number of
accumulation steps".
Thread: AI-Hypercomputer/maxtext#1483 ("moe_lb_loss should be divided by config.gradient_accumulation_steps for
reporting"); lightly-ai/lightly-train#662 ("Accumulate train loss with gradient_accumulation_steps").
Fix: `logged += loss.detach() / ACCUM` (report the mean of the micro-batch losses).
Validated without the tool (seeds 0,1,2; 50 optimizer steps of 16 x 16 pairs; batch 16; final = mean of the last 5
logged steps): fault final loss 1.8557/1.8845/1.6690 (= 0.669/0.680/0.602 ln(B), ln(16) = 2.7726); fixed
0.1160/0.1178/0.1043 (= 0.042/0.043/0.038 ln(B)).
Ground truth: logging_misstates_loss.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import PerceiverAligner, token_pairs, clip_loss

THREADS = ("AI-Hypercomputer/maxtext#1483", "lightly-ai/lightly-train#662")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"
BATCH = 16   # micro-batch: the pairs each contrastive loss is computed over
ACCUM = 16


def train(watch, steps: int = 50, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt) as w:
        for step in range(steps):
            opt.zero_grad()
            logged = torch.zeros(())
            for micro in range(ACCUM):
                idx = torch.randperm(len(tokens), generator=g)[:BATCH]
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                (loss / ACCUM).backward()
                if fixed:
                    logged += loss.detach() / ACCUM
                else:
                    logged += loss.detach()
            w.observe(step, losses={"clip": logged}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
