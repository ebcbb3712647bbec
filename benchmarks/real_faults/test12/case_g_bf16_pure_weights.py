"""Pure-bf16 training: the user casts the whole aligner to bfloat16 (`model.to(torch.bfloat16)`) to save memory
and keeps torch.optim.AdamW, so the weights themselves are stored in bf16 with no fp32 master copy. Adam's
per-step update (about lr = 1e-4 per weight) is below half a bf16 ulp for every weight larger than ~0.03 (bf16
keeps 8 significant bits), so the new value rounds back to the old one: most weights, and the logit scale at
2.66, never move; the loss hardly leaves its start. Threads: workofart/ml-by-hand#85 ("Adam optimizer's update
was computed in fp32 internally but written back to bf16 ... each weight update step ... rounds back to 1, so
after 100 times it's still 1.0"); pytorch/ao#1124 ("if weight update is smaller than 1e-3 of the weight
magnitude, there will be no change to the weight (using nearest rounding). This is highly problematic for full
BF16 training, where we don't keep an FP32 copy of model weights").
Fix: drop the `model.to(torch.bfloat16)`: fp32 weights, the forward in bf16 under torch.autocast (the loop
already enables autocast whenever the weights are fp32).
Validated without the tool (seeds 0,1,2; 120 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.279/3.764/3.846 (= 1.03/0.91/0.92 ln(B), ln(64) = 4.1589); fixed 1.231/1.181/1.145 (= 0.296/0.284/0.275 ln(B)).
Ground truth: learning_rate_too_low.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("workofart/ml-by-hand#85", "pytorch/ao#1124")
CAUSE = "learning_rate_too_low"
FAMILY = "precision"
BATCH = 64


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    if not fixed:
        model = model.to(torch.bfloat16)  # BUG: bf16 weights, no fp32 master copy
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            dtype = next(model.parameters()).dtype
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.float32):
                img, txt = model(tokens[idx].to(dtype), texts[idx].to(dtype))
                logits = model.logit_scale.exp() * img @ txt.t()
            logits = logits.float()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img.float(), "text": txt.float()},
                      logits=logits, batch_size=BATCH)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
