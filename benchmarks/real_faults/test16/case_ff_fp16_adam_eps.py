"""The user casts the whole aligner to fp16 to save memory (as CLIP's loader does on GPU) and trains it with a
plain torch.optim.Adam at its default eps=1e-8. In fp16 that eps rounds to 0 and small squared gradients
underflow, so Adam divides 0 by 0 on the first update: every weight is NaN after one step and the loss is NaN
from step 1 on.

Thread: openai/CLIP#40 ("I get NaN values after a single parameter update"); afiaka87/glide-finetune#5 ("the adam optimizer by pytorch does has some weird behavior on float16 precision where it produces nans")
Fix: Adam(..., eps=1e-4) for the fp16 weights (afiaka87/glide-finetune#6).
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; final = mean of the last 5 steps): fault final loss NaN/NaN/NaN (non-finite from step 1 on); fixed 0.212/0.217/0.204 (= 0.051/0.052/0.049 ln(B)).
Ground truth: nonfinite_divergence.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import token_pairs, ResamplerAligner, clip_loss

THREADS = ("openai/CLIP#40", "afiaka87/glide-finetune#5")
CAUSE = "nonfinite_divergence"
FAMILY = "precision"
BATCH = 64


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    tokens, texts = tokens.half(), texts.half()
    model = ResamplerAligner().half()
    eps = 1e-4 if fixed else 1e-8
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=eps)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
