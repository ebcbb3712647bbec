"""A resampler aligner is trained with a fixed InfoNCE temperature of 0.07 (SimCLR/MoCo style, no learnable logit
scale), but the division by the temperature was left out of the line that builds the logits: `logits = img @ txt.t()`.
The embeddings are L2-normalised, so every logit is a cosine in [-1, 1]; even a perfect alignment can then only reach
a softmax of e^1 against (B-1) e^~0 competitors, and the loss floors far above zero (about ln(1 + (B-1)/e) = 3.2 for
B = 64, 0.77 ln(B)) however long it trains. In huiserwang/ContrastMask#4 a reader spotted the same omission in a
released InfoNCE head, and the author confirmed it.
Thread: huiserwang/ContrastMask#4 ("Did you forgot to divide "tem" on this line in your code?" / "Yes, I forgot it.").
Fix: `logits = img @ txt.t() / TEMPERATURE`.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
3.269/3.267/3.264 (= 0.786/0.786/0.785 ln(64)); fixed 0.133/0.135/0.137 (= 0.032/0.033/0.033 ln(64)).
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, clip_loss, token_pairs

THREADS = ("huiserwang/ContrastMask#4",)
CAUSE = "temperature"
FAMILY = "normalisation_temperature"
BATCH = 64
TEMPERATURE = 0.07


class Aligner(nn.Module):
    """flamingo-pytorch PerceiverResampler over frozen patch tokens, mean over latents, linear heads."""

    def __init__(self):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.img_head = nn.Linear(D, E)
        self.txt_head = nn.Linear(DT, E)

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]
        return F.normalize(self.img_head(lat.mean(1)), dim=-1), F.normalize(self.txt_head(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = Aligner()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            if fixed:
                logits = img @ txt.t() / TEMPERATURE
            else:
                logits = img @ txt.t()  # the temperature never enters
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
