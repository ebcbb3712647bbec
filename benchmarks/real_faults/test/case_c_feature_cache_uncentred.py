"""I train an attention-pooling adapter on patch features I cached once from a frozen backbone. The
cache stores raw activations: every token carries the same large mean vector (the backbone's shared
offset), so all images look alike (cosine ~0.995) and the adapter learns far more slowly than on centred
features. Thread(s):
AI4LIFE-GROUP/SpLiCE#4 ("After mean-centering, the similarity is lower meaning the image/text
embedding vectors are well-distributed on the entire hypersphere instead of being concentrated with
a high similarity"); yuhui-zh15/drml#2 (the gap "could be closed by subtracting the mean,
x-E[X]"); openai/CLIP#148 (cosine between unrelated texts "does not fall below 0.6"). Fix: subtract
the cache's mean feature (computed once over the training set) before training.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; mean of the last 5 losses): fault 1.648,
1.912, 1.179 vs ln(B) = 4.159 (learns worse: 2.6-4.2x the fixed loss; input cosine 0.995); fixed
0.428, 0.454, 0.392 (input cosine ~0.00).
Ground truth: shared_input_component.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # so `python case.py` finds common
import torch
import torch.nn.functional as F
from torch import nn

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("AI4LIFE-GROUP/SpLiCE#4", "yuhui-zh15/drml#2", "openai/CLIP#148")
CAUSE = "shared_input_component"
FAMILY = "data_pipeline"
BATCH = 64
OFFSET = 40.0


class AttnPoolAdapter(nn.Module):
    def __init__(self):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        self.attn = nn.MultiheadAttention(D, num_heads=4, batch_first=True)
        self.proj = nn.Sequential(nn.Linear(D, E), nn.GELU(), nn.Linear(E, E))
        self.text = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.logit_scale = nn.Parameter(torch.tensor(2.6593))

    def forward(self, tokens, texts):
        pooled, _ = self.attn(self.query.expand(len(tokens), -1, -1), tokens, tokens)
        return F.normalize(self.proj(pooled[:, 0]), dim=-1), F.normalize(self.text(texts), dim=-1)


def build_cache(seed: int, fixed: bool):
    tokens, texts = token_pairs(2048, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    cache = tokens + OFFSET * torch.randn(D, generator=g)  # raw backbone activations share one mean vector
    if fixed:
        cache = cache - cache.mean(dim=(0, 1))  # centre the cache once
    return cache, texts


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    cache, texts = build_cache(seed, fixed)
    torch.manual_seed(seed)
    model = AttnPoolAdapter()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(cache), (BATCH,), generator=g)
            img, txt = model(cache[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=cache[idx])
            opt.step(); opt.zero_grad()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
