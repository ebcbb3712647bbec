"""A user adds gradient accumulation to a CLIP fine-tuning loop (8 micro-batches per optimizer step, each
micro-batch loss divided by 8 before backward, as the docs say) and logs the accumulated `tr_loss`, which is
the SUM of the unscaled micro-batch losses: the logged loss is 8x the objective. The run itself trains fine,
but the curve on the dashboard sits at 8x its real value (far above ln(B) early on, and it never gets near the
values the same run without accumulation shows), so the user concludes accumulation broke training. This is the
transformers Trainer bug of late 2024: the logged loss was not divided by the accumulation steps.
Threads: huggingface/transformers#35207 ("the loss for `gradient_accumulation_steps=2` is errornously doubled");
NVIDIA-NeMo/Speech#3019 ("Log train loss averaged over gradient accumulation steps").
Fix: log `tr_loss / ACCUM` (the mean of the micro-batch losses, which is the objective optimised).
Validated without the tool (seeds 0,1,2; 40 optimizer steps of 8 micro-batches; batch 32; final = mean of the last
5 steps): fault final loss 1.3244/1.1152/1.4813 (= 0.382/0.322/0.427 ln(B));
fixed 0.1656/0.1394/0.1852 (= 0.048/0.040/0.053 ln(B)). One seed < 14 s.
Ground truth: logging_misstates_loss.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("huggingface/transformers#35207", "NVIDIA-NeMo/Speech#3019")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"
BATCH = 32
ACCUM = 8


def train(watch, steps: int = 40, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            opt.zero_grad()
            tr_loss = 0.0
            for micro in range(ACCUM):
                idx = torch.randint(0, len(tokens), (BATCH,))
                img, txt = model(tokens[idx], texts[idx])
                scale = model.logit_scale.exp()
                logits = scale * img @ txt.t()
                loss = clip_loss(logits)
                (loss / ACCUM).backward()
                tr_loss = tr_loss + loss.detach()
            logged = tr_loss / ACCUM if fixed else tr_loss
            w.observe(step, losses={"clip": logged}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
