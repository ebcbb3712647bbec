"""A user writes an aligner whose projection heads depend on the feature widths, so the model builds them in a
`setup(token_dim, text_dim)` call once the first batch has been looked at; the optimizer is created right after the
model, before `setup` runs. `model.parameters()` at that moment yields only the logit scale: the image head (a
PerceiverResampler and a projection) and the text head are created afterwards and are in no param group. Backward
fills their gradients every step, `opt.step()` never touches them, the random heads stay where they started and the
loss sits at ln(B) (only the logit scale moves). The ocaml-torch issue is the same mistake, the optimizer created on
the line before the linear layer: "When I ran this code, it kept printing the same, initial loss value", "it took
several days to figure out what's happening".
Thread: LaurentMazare/ocaml-torch#36 ("Unexpected results related to creation/initialization of layers and
optimizer (when step function does nothing)").
Fix: create the optimizer after the layers exist (after `setup`), the order the issue found to be the problem.
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss
5.079/4.548/4.668 (= 1.47/1.31/1.35 ln(B), ln(32) = 3.466); fixed 0.122/0.152/0.132 (= 0.04/0.04/0.04 ln(B), ln(32) = 3.466).
Ground truth: param_not_in_optimizer.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math

import torch
import torch.nn.functional as F
from torch import nn
from common import E, clip_loss, token_pairs

THREADS = ("LaurentMazare/ocaml-torch#36",)
CAUSE = "param_not_in_optimizer"
FAMILY = "optimizer_schedule"
BATCH = 32


class LazyAligner(nn.Module):
    def __init__(self, embed_dim: int = E):
        super().__init__()
        self.embed_dim = embed_dim
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def setup(self, token_dim: int, text_dim: int) -> None:
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=token_dim, depth=2, dim_head=8, heads=2, num_latents=8)
        self.proj = nn.Linear(token_dim, self.embed_dim)
        self.text = nn.Sequential(nn.Linear(text_dim, self.embed_dim), nn.GELU(), nn.Linear(self.embed_dim, self.embed_dim))

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]
        return F.normalize(self.proj(lat.mean(1)), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = LazyAligner()
    if not fixed:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    model.setup(tokens.shape[-1], texts.shape[-1])          # heads built once the widths are known
    if fixed:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
