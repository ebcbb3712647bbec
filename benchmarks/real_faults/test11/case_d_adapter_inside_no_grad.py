"""Trainable adapter placed inside the `torch.no_grad()` block meant for the frozen backbone. LiT-style alignment:
the vision backbone and the text tower are locked, and only a Perceiver resampler + projection on top of the vision
backbone (and the logit scale) are trained. The user wraps the image encoding in `with torch.no_grad():` to skip
the frozen backbone's graph, but the resampler and the projection are called inside the same block, so the image
embeddings come out with no autograd history. backward() does not fail because the learnable logit scale still
requires grad; it is the only parameter that receives a gradient, and the loss sits at chance. hangyu94/Ada-CM#8:
"If you using torch.no_grad(), the feature_u and feature_u2 have no gradient to update model's parameter. Then, the
loss just a constant value"; FrozenBurning/Text2Light#10: "It seems that the contrastive loss have no gradient on the
network ... with torch.no_grad(): ... the #hack line should be removed which allows the gradient to flow back".
Thread: hangyu94/Ada-CM#8 ("the loss just a constant value"); FrozenBurning/Text2Light#10 ("the contrastive loss
have no gradient on the network").
Fix: call the resampler and the projection after the `with torch.no_grad():` block (only the backbone inside it).
Validated without the tool (seeds 0,1,2; 80 steps; batch 128; final = mean of the last 5 steps): fault final loss
5.088/6.136/5.930 (= 1.05/1.26/1.22 ln(128)); fixed 0.727/0.840/1.018 (= 0.15/0.17/0.21 ln(128)).
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, clip_loss, token_pairs

THREADS = ("hangyu94/Ada-CM#8", "FrozenBurning/Text2Light#10")
CAUSE = "no_gradient_path"
FAMILY = "frozen_parts"
BATCH = 128


class LockedAligner(nn.Module):
    def __init__(self, fixed: bool = False):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.fixed = fixed
        self.backbone = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Linear(D, D))  # "pretrained", frozen
        self.text_tower = nn.Linear(DT, E)                                            # "pretrained", frozen
        for p in list(self.backbone.parameters()) + list(self.text_tower.parameters()):
            p.requires_grad_(False)
        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.proj = nn.Linear(D, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, tokens):
        with torch.no_grad():
            feats = self.backbone(tokens)
            if not self.fixed:  # the bug: the trainable adapter runs inside the no_grad block
                lat = self.resampler(feats.unsqueeze(1))[:, 0]
                img = self.proj(lat.mean(1))
        if self.fixed:
            lat = self.resampler(feats.unsqueeze(1))[:, 0]
            img = self.proj(lat.mean(1))
        return img

    def forward(self, tokens, texts):
        return F.normalize(self.encode_image(tokens), dim=-1), F.normalize(self.text_tower(texts), dim=-1)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = LockedAligner(fixed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.05)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
