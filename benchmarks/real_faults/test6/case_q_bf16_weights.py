"""Pure bfloat16 training. To halve memory the user casts the whole aligner to bfloat16 (`model.to(torch.bfloat16)`)
and keeps AdamW at the small fine-tuning learning rate of 1.2e-4, with the forward pass under bf16 autocast as before.
There is no float32 master copy: each AdamW update (about lr = 1.2e-4 per entry) is added to a bf16 weight whose
spacing is 2^-8 to 2^-7 of its magnitude, so for every weight above roughly 0.05 in magnitude (and every LayerNorm
gain and the logit scale) the update is rounded away and the weight never moves; only about a third of the entries
ever change.
The run learns far more slowly than the same run with float32 weights and bf16 autocast. The threads:
tensorflow/tensorflow#58138 ("When using Adam optimizer and setting the model to bfloat16, the loss does not
decrease. When set to SGD, it does decrease though.") and pytorch/pytorch#120376 (bf16 weights need stochastic
rounding or fp32 master weights: "now the new bfloat16 AdamW ... performs the same as float32 training"). In the
tool's vocabulary the nearest cause is a learning rate too low: the effective update of most weights is exactly zero.
Thread: tensorflow/tensorflow#58138 ("setting the model to bfloat16, the loss does not decrease");
pytorch/pytorch#120376.
Fix: `model = ResamplerAligner()` (float32 master weights; the forward stays under bf16 autocast).
Validated without the tool (seeds 0,1,2; 120 steps; batch 64; final = mean of the last 5 steps): fault final loss
5.077/3.756/3.323 (= 1.221/0.903/0.799 ln(64)); fixed 1.508/0.872/0.828 (= 0.363/0.210/0.199 ln(64)).
Ground truth: learning_rate_too_low.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("tensorflow/tensorflow#58138", "pytorch/pytorch#120376")
CAUSE = "learning_rate_too_low"
FAMILY = "precision"
BATCH = 64


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(4096, seed)
    model = ResamplerAligner() if fixed else ResamplerAligner().to(torch.bfloat16)
    dtype = next(model.parameters()).dtype
    opt = torch.optim.AdamW(model.parameters(), lr=1.2e-4, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            x, y = tokens[idx].to(dtype), texts[idx].to(dtype)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                img, txt = model(x, y)
                scale = model.logit_scale.exp()
                logits = scale * img @ txt.t()
            loss = clip_loss(logits.float())
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=x, extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
