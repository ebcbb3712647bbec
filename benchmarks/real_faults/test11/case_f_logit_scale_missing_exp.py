"""Temperature applied in the wrong space: the model stores the CLIP temperature as a log (initialised at
ln(1/0.07) = 2.659, as in the reference code) but multiplies the cosine similarities by the stored value directly,
without `.exp()`. The logits are scaled by 2.66 instead of 14.3, so even perfectly aligned embeddings leave the
softmax spread over the batch, and the log-parameter only grows linearly with the learning rate instead of
multiplicatively. Reported on a released CLIP code base.
Thread: BAAI-DCAI/M3D#64 ("the code in your clip file does not has this: logit_scale = self.logit_scale.exp() for
the forward function, which has in the original clip code. Is this intentional, or is it a bug?").
Fix: `logits = self.logit_scale.exp() * img @ txt.t()`.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
2.046/2.017/2.045 (= 0.492/0.485/0.492 x ln(B), ln(B) = 4.159); fixed 0.147/0.122/0.177 (= 0.035/0.029/0.043 x ln(B), ln(B) = 4.159).
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import token_pairs, clip_loss, D, DT, E

THREADS = ("BAAI-DCAI/M3D#64",)
CAUSE = "temperature"
FAMILY = "normalisation_temperature"
BATCH = 64


class CLIPHead(nn.Module):
    def __init__(self, fixed: bool = False):
        super().__init__()
        self.fixed = fixed
        self.visual = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.textual = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))

    def forward(self, tokens, texts):
        img = F.normalize(self.visual(tokens).mean(1), dim=-1)
        txt = F.normalize(self.textual(texts), dim=-1)
        scale = self.logit_scale.exp() if self.fixed else self.logit_scale
        return img, txt, scale * img @ txt.t(), scale


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = CLIPHead(fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt, logits, scale = model(tokens[idx], texts[idx])
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
