"""LiT-style alignment: the vision tower and the text tower are pretrained and locked (requires_grad False);
only a LLaVA-style two-layer MLP projector on the patch features (and the logit scale) is trained. The
encode step runs the frozen vision tower under `torch.no_grad()` to save memory, and the projector call
sits inside the same `with` block, so its output carries no autograd history. The optimizer holds the
projector, the loss goes backward without an error (through the logit scale), and the projector never
changes: the loss never gets below chance.

Thread: RupertLuo/Valley#13 ("All ```mm_projector``` are wrapped in ```torch.no_grad``` so that the projector will not be trained, since the gradient is blocked")
Fix: call the projector outside the `torch.no_grad()` block.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss 4.54/5.52/5.72 (= 1.09/1.33/1.37 ln(B)); fixed 0.78/0.78/0.80 (= 0.19/0.19/0.19 ln(B)).
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math

import torch
import torch.nn.functional as F
from torch import nn

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("RupertLuo/Valley#13",)
CAUSE = "no_gradient_path"
FAMILY = "frozen parts"
BATCH = 64


class LockedTowersAligner(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        self.fixed = fixed
        self.vision_tower = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, D), nn.GELU())
        self.mm_projector = nn.Sequential(nn.Linear(D, 2 * E), nn.GELU(), nn.Linear(2 * E, E))
        self.text_tower = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.vision_tower.requires_grad_(False)
        self.text_tower.requires_grad_(False)

    def encode_image(self, tokens):
        if self.fixed:
            with torch.no_grad():
                feats = self.vision_tower(tokens)
            feats = self.mm_projector(feats)
        else:
            with torch.no_grad():
                feats = self.vision_tower(tokens)
                feats = self.mm_projector(feats)
        return F.normalize(feats.mean(1), dim=-1)

    def encode_text(self, texts):
        return F.normalize(self.text_tower(texts), dim=-1)

    def forward(self, tokens, texts):
        return self.encode_image(tokens), self.encode_text(texts)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = LockedTowersAligner(fixed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.05)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
