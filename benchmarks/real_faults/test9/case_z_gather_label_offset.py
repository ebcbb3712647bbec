"""Multi-GPU CLIP-style training with features gathered across ranks (a GatherLayer that keeps gradients):
every rank scores its local images against the gathered texts of all ranks, so its positives sit at columns
rank*n .. rank*n+n-1. The user's loss keeps the single-GPU labels `torch.arange(n)`, i.e. drops the rank
offset the thread's snippet has (`labels = torch.arange(n*rank, n*(rank+1))`). On rank 0 nothing looks
wrong; on every other rank each image is trained towards another rank's caption. In the thread, after
moving a loss to gathered features, the reporter sees on 16 GPUs: "the model seems divergent. The
validation acc won't increase ... and the loss will increase sometimes" (the getting-the-labels-right part
of gathering is what this case isolates). Here 4 ranks are simulated in one process (local batch
16, gathered 64 candidates), the ranks' losses averaged as DDP averages their gradients, the logged loss is
the all-reduced mean.
Thread: vturrisi/solo-learn#229 ("labels = torch.arange(n*rank, n*(rank+1), device=p.device)"; "when I ran
it on 16GPUs, the model seems divergent").
Fix: labels = torch.arange(n) + rank * n.
Validated without the tool (seeds 0,1,2; 80 steps; batch 16 per rank x 4 ranks = 64 candidates; final =
mean of the last 5 steps): fault final loss (all-reduced mean) 4.1172/4.1357/4.1772 (= 0.990/0.994/1.004
ln(64)); fixed 0.2206/0.1999/0.2364 (0.053/0.048/0.057 ln(64)).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import token_pairs, D, DT, E

THREADS = ("vturrisi/solo-learn#229",)
CAUSE = "wrong_targets"
FAMILY = "distributed"
WORLD, LOCAL = 4, 16
BATCH = LOCAL


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.image(tokens.mean(1)), dim=-1), F.normalize(self.text(texts), dim=-1)


def rank_loss(img_local, txt_all, scale, rank, fixed):
    n = len(img_local)
    logits = scale * img_local @ txt_all.t()                     # (n, WORLD * n)
    labels = torch.arange(n) + rank * n if fixed else torch.arange(n)
    return F.cross_entropy(logits, labels), logits, labels


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = Aligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    with watch(model, opt, batch_size=LOCAL) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (WORLD * LOCAL,))    # each rank's DistributedSampler shard
            img, txt = model(tokens[idx], texts[idx])                # all ranks' features (gathered with grad)
            scale = model.logit_scale.exp()
            per_rank = [rank_loss(img[r * LOCAL:(r + 1) * LOCAL], txt, scale, r, fixed) for r in range(WORLD)]
            loss = sum(l for l, _, _ in per_rank) / WORLD              # DDP: gradients averaged over ranks
            _, logits0, labels0 = per_rank[0]                        # what rank 0 (the logging rank) holds
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img[:LOCAL], "text": txt[:LOCAL]},
                      logits=logits0, targets=labels0, batch_size=LOCAL, candidates=WORLD * LOCAL,
                      extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
