"""To save memory the user casts the whole aligner to half precision (`model.half()`, inputs `.half()`) and
keeps the default Adam. Adam's `eps=1e-8` is below the smallest fp16 number and rounds to 0; for weights whose
gradient is small, `exp_avg_sq` (~1e-3 * g^2) underflows to 0 too, so the update is exp_avg / (0 + 0) = inf and
the weights, then the loss, turn NaN within the first steps.
Thread: soumith/cudnn.torch#377 ("the nan's were due the adam optimisation. The default epsilon of 1e-8 is too
low and rounded to zero"); afiaka87/glide-finetune#6 ("In half precision, after the first iteration nan values
start appearing ... since the adam optimizer breaks in float16 ... fixed by setting the eps variable to 1e-4");
jinxixiang/magic_animate_unofficial#6 ("If the precision of model is FP16, the loss becomes NAN ... Increasing
the adam_epsilon may help").
Fix: `torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4)`.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
non-finite on every seed (NaN from step 1/1/1); fixed 0.2356/0.2575/0.2658 (= 0.057/0.062/0.064 ln(B), ln(B) = 4.1589).
Ground truth: nonfinite_divergence.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, token_pairs, clip_loss

THREADS = ("soumith/cudnn.torch#377", "afiaka87/glide-finetune#6", "jinxixiang/magic_animate_unofficial#6")
CAUSE = "nonfinite_divergence"
FAMILY = "precision"
BATCH = 64


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))
        self.proj = nn.Linear(D, E)
        self.text = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        img = self.proj(self.pool(tokens).mean(1))
        return F.normalize(img, dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    tokens, texts = tokens.half(), texts.half()
    model = Aligner().half()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4 if fixed else 1e-8)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits.float())
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
