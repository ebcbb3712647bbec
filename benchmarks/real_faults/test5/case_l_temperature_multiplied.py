"""The user's InfoNCE has a config value `temperature = 0.07` and writes the logits as
`img @ txt.t() * temperature` instead of dividing by it. With unit-norm embeddings the logits then live in
[-0.07, 0.07]: the softmax over the batch is almost uniform whatever the model does, the loss can fall only a
hair below ln(B) and the gradients it gives are ~200x too small.
Thread: drboog/Lafite#25 (the loss formula and code disagree on where the temperature goes; "one of my previous
version of code used this 'incorrect' implementation"); young-geng/CQL#3 (temperature applied on the wrong side:
"You are right that this is indeed a mistake").
Fix: `logits = img @ txt.t() / temperature`.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.0905/4.0909/4.0906 (= 0.984/0.984/0.984 ln(B), ln(B) = 4.1589); fixed 0.1295/0.1428/0.1319 (= 0.031/0.034/0.032 ln(B), ln(B) = 4.1589).
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, token_pairs

THREADS = ("drboog/Lafite#25", "young-geng/CQL#3")
CAUSE = "temperature"
FAMILY = "normalisation_temperature"
BATCH = 64
TEMPERATURE = 0.07


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(D, 2, batch_first=True)
        self.query = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        self.proj = nn.Linear(D, E)
        self.text = nn.Linear(DT, E)

    def forward(self, tokens, texts):
        pooled, _ = self.attn(self.query.expand(len(tokens), -1, -1), tokens, tokens)
        return F.normalize(self.proj(pooled[:, 0]), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = Aligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    labels = torch.arange(BATCH)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randperm(len(tokens))[:BATCH]
            img, txt = model(tokens[idx], texts[idx])
            logits = img @ txt.t() / TEMPERATURE if fixed else img @ txt.t() * TEMPERATURE
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      targets=labels)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
