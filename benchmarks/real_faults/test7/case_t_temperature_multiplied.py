"""A config says `temperature: 0.07` and the loss multiplies the cosine logits by it (`img @ txt.t() *
temperature`) instead of dividing (or multiplying by the logit scale 1/0.07 = 14.3): with L2-normalised embeddings
the logits stay within [-0.07, 0.07], the softmax over the batch is flat whatever the model does, and the CLIP loss
sits at ln(B) while the towers barely receive a signal. The CLIP authors explain why the scale is needed: "Because we
normalize the feature vectors, the dot products are capped between [-1, 1], which might not have the enough dynamic
range and limit the categorical probability distributions that the logits can express. For this reason, we scale
..."; users keep asking which way the temperature goes ("why we should divide logits by temperature").
Thread: openai/CLIP#48 ("the dot products are capped between [-1, 1], which might not have the enough dynamic
range"); PhamNguyen97/TSA_pytorch#1 ("why we should divide logits by temperature").
Fix: `logits = img @ txt.t() / CFG["temperature"]`.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.0927/4.0924/4.0923 (= 0.984 ln(64) on each seed); fixed 0.1974/0.1644/0.1774 (0.047/0.040/0.043 ln(64)).
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, token_pairs, clip_loss

THREADS = ("openai/CLIP#48", "PhamNguyen97/TSA_pytorch#1")
CAUSE = "temperature"
FAMILY = "normalisation_temperature"
BATCH = 64
CFG = {"lr": 1e-3, "weight_decay": 0.05, "temperature": 0.07}   # "temperature: 0.07" as in the CLIP paper


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.img = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.txt = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))

    def forward(self, tokens, texts):
        return F.normalize(self.img(tokens.mean(1)), dim=-1), F.normalize(self.txt(texts), dim=-1)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = Aligner()
    opt = torch.optim.AdamW(model.parameters(), lr=CFG["lr"], weight_decay=CFG["weight_decay"])
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randperm(len(tokens))[:BATCH]
            img, txt = model(tokens[idx], texts[idx])
            if fixed:
                logits = img @ txt.t() / CFG["temperature"]          # the fix: divide by the temperature
            else:
                logits = img @ txt.t() * CFG["temperature"]          # the bug: multiplied, as if it were a scale
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
