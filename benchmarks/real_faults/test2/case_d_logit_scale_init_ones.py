"""The learnable temperature is initialised as `nn.Parameter(torch.ones([]))` (the early Hugging Face CLIP
port) and used as `logit_scale.exp()`, so the logits start at scale e = 2.7 instead of 1/0.07 = 14.3;
with cosine logits in [-1, 1] and an lr suited to the weights, the scale barely moves in a short run and
the softmax stays too flat: the loss sits far above what the same resampler reaches. Threads:
huggingface/transformers#13430 ("huggingface transformers' CLIP: self.logit_scale =
nn.Parameter(torch.ones([])) ... OpenAI CLIP: self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 /
0.07))" - "not initializing the logits_scale to the right value could cause issues"), openai/CLIP#46
("shouldn't initial temperature be 0.07 ... self.logit_scale = nn.Parameter(torch.ones([]))"). The fix:
initialise it at ln(1/0.07).
Validated without the tool (seeds 0,1,2; 60 steps; batch 64): fault final loss (mean of the last 5 steps)
2.25/2.27/2.23 vs ln(64) = 4.159; fixed 0.38/0.38/0.33.
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math

import torch
import torch.nn.functional as F
from common import DT, D, E, token_pairs
from torch import nn

THREADS = ("huggingface/transformers#13430", "openai/CLIP#46")
CAUSE = "temperature"
FAMILY = "initialisation"
BATCH = 64


class ResamplerCLIP(nn.Module):
    """Patch tokens -> flamingo-pytorch PerceiverResampler -> mean over latents -> projection; text -> MLP."""

    def __init__(self, logit_scale_init: float):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=4)
        self.visual_projection = nn.Linear(D, E, bias=False)
        self.text_projection = nn.Sequential(nn.Linear(DT, 2 * E), nn.GELU(), nn.Linear(2 * E, E, bias=False))
        self.logit_scale = nn.Parameter(torch.ones([]) * logit_scale_init)

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]
        img = F.normalize(self.visual_projection(lat.mean(1)), dim=-1)
        txt = F.normalize(self.text_projection(texts), dim=-1)
        return img, txt


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerCLIP(math.log(1 / 0.07) if fixed else 1.0)  # the fault: torch.ones([])
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(BATCH)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits_per_image = scale * img @ txt.t()
            logits_per_text = logits_per_image.t()
            loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                      logits=logits_per_image, batch_size=BATCH, inputs=tokens[idx],
                      extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
