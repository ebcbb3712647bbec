"""The paper says "temperature 0.05"; the user's loss helper (sentence-transformers' MultipleNegativesRankingLoss
style) takes a `scale` that MULTIPLIES the cosine matrix (scale 20 == temperature 0.05). The user passes the
temperature as the scale: logits = 0.05 * cos, all within [-0.05, 0.05], the softmax over 64 captions is
almost uniform whatever the embeddings do, and the loss sits at ln(B) (the gradient is ~0.05x too).
Threads: huggingface/sentence-transformers#2770 ("the learning impact of adjusting the scale value, often called
temperature"); KevinMusgrave/powerful-benchmarker#90 ("Many papers use the term 'temperature', which is the
inverse of softmax_scale").
Fix: `scale = 1 / TEMPERATURE` (20) instead of `TEMPERATURE`.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.112/4.111/4.111 (= 0.989/0.988/0.989 ln(64), ln(64) = 4.159); fixed 0.154/0.133/0.135 (= 0.037/0.032/0.032 ln(64)).
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, token_pairs, clip_loss

THREADS = ("huggingface/sentence-transformers#2770", "KevinMusgrave/powerful-benchmarker#90")
CAUSE = "temperature"
FAMILY = "normalisation_temperature"
BATCH = 64
TEMPERATURE = 0.05   # "temperature 0.05", as in the papers


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.vision = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.text = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))

    def forward(self, tokens, texts):
        return F.normalize(self.vision(tokens).mean(1), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = Aligner()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # the loss helper multiplies the cosine matrix by its `scale` argument (sentence-transformers style);
    # the temperature from the paper was passed as that scale
    scale = 1 / TEMPERATURE if fixed else TEMPERATURE
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
