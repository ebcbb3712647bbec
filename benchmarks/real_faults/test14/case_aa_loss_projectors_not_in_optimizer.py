"""A user aligns frozen image patch features with frozen text features through an alignment loss module in the style
of GeometryForcing's `VGGTAlignmentLoss`: the loss module owns the learnable projectors (a patch-token MLP for the
image side and a linear head for the text side) and the model wrapper keeps it as a plain attribute of the training
script, while the optimizer is built from `model.parameters()`, the wrapper's own parameters (here the logit scale).
The projectors receive gradients on every backward but sit in no param group, so `opt.step()` never moves them: the
two random projections never come to agree, and the one parameter that does move, the logit scale, only sharpens
random scores: the contrastive loss climbs above ln(B). The thread: "The learnable parameters of the class VGGTAlignmentLoss are never added to the optimizer. So it
is unclear how the network is able to learn geometric features at all"; the author: "The projector wasn't trained in
the initial commit ... I solved this bug by adding adding projector to the optimizer."
Thread: CIntellifusion/GeometryForcing#13 ("Learnable parameters are not added to the optimizer, no real training can
happen!").
Fix: put the loss module's projectors into the optimizer as the author did (`list(model.parameters()) +
list(align_loss.parameters())`).
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss
4.523/5.088/4.924 (= 1.31/1.47/1.42 ln(B), ln(32) = 3.466); fixed 0.123/0.144/0.109 (= 0.04/0.04/0.03 ln(B), ln(32) =
3.466).
Ground truth: param_not_in_optimizer.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math

import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, token_pairs

THREADS = ("CIntellifusion/GeometryForcing#13",)
CAUSE = "param_not_in_optimizer"
FAMILY = "optimizer_schedule"
BATCH = 32


class AlignmentLoss(nn.Module):
    """Projects pooled patch tokens and text features into a shared space and scores them with InfoNCE."""

    def __init__(self):
        super().__init__()
        self.projector = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.text_projector = nn.Linear(DT, E)

    def embed(self, tokens, texts):
        img = F.normalize(self.projector(tokens).mean(1), dim=-1)
        txt = F.normalize(self.text_projector(texts), dim=-1)
        return img, txt


class Wrapper(nn.Module):
    """The training wrapper: holds the learnable temperature; the alignment loss is kept beside it."""

    def __init__(self):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = Wrapper()
    align_loss = AlignmentLoss()
    params = list(model.parameters())
    if fixed:
        params += list(align_loss.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = align_loss.embed(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            labels = torch.arange(BATCH)
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
