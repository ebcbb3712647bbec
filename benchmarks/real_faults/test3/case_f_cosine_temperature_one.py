"""A bi-encoder fine-tuned FlagEmbedding-style: `--normlized True` (cosine similarity) with `--temperature 1`,
the value the BiEncoderModel's `temperature: float = 1.0` default and its inner-product mode use. With L2
normalised embeddings the scores lie in [-1, 1]; divided by 1 the softmax over the batch is nearly flat (even
perfectly aligned pairs cannot bring the loss at batch 64 below about 3.2 = 0.76 ln(64)), so the loss barely moves and retrieval stays weak.
Later versions of the library raise "Temperature should be smaller than 1.0 when use cosine similarity".
Threads: FlagOpen/FlagEmbedding#713 ("--normlized True --temperature 1 ... The training loss doesn't seem to
decrease for this and a few other similar datasets"); FlagOpen/FlagEmbedding#58 (maintainer: a temperature is
needed only with cosine similarity, "because the range of cosine similarity is very small, the model is hard
to optimise", translated); FlagOpen/FlagEmbedding#1008 ("ValueError: Temperature should be smaller than 1.0 when use cosine
similarity (i.e., normlized=True). Recommend to set it 0.01-0.1").
Fix: `TEMPERATURE = 0.02` (the value the library's examples use).
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final
loss 3.345/3.339/3.342 (= 0.804/0.803/0.804 ln(64)); fixed 0.200/0.246/0.260 (= 0.048/0.059/0.063).
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, token_pairs

THREADS = ("FlagOpen/FlagEmbedding#713", "FlagOpen/FlagEmbedding#58", "FlagOpen/FlagEmbedding#1008")
CAUSE = "temperature"
FAMILY = "normalisation_temperature"
BATCH = 64


class BiEncoder(nn.Module):
    """Patch tokens -> a small transformer layer -> CLS-style first token -> projection; text -> MLP."""

    def __init__(self, normalized=True):
        super().__init__()
        self.normalized = normalized
        self.cls = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        self.encoder = nn.TransformerEncoderLayer(D, nhead=2, dim_feedforward=2 * D, batch_first=True)
        self.proj = nn.Linear(D, E)
        self.text = nn.Sequential(nn.Linear(DT, 2 * E), nn.GELU(), nn.Linear(2 * E, E))

    def encode_image(self, tokens):
        x = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1)
        rep = self.proj(self.encoder(x)[:, 0])
        return F.normalize(rep, dim=-1) if self.normalized else rep

    def encode_text(self, texts):
        rep = self.text(texts)
        return F.normalize(rep, dim=-1) if self.normalized else rep


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    temperature = 0.02 if fixed else 1.0       # the bug: --temperature 1 with --normlized True
    tokens, texts = token_pairs(1024, seed)
    model = BiEncoder(normalized=True)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
    target = torch.arange(BATCH)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            q, p = model.encode_image(tokens[idx]), model.encode_text(texts[idx])
            scores = q @ p.t() / temperature
            loss = F.cross_entropy(scores, target)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"contrastive": loss}, embeddings={"image": q, "text": p}, logits=scores,
                      batch_size=BATCH, targets=target)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
