"""A user moves an image-text aligner to data-parallel training with a local-loss InfoNCE (open_clip style:
each rank scores its own rows against the features gathered from all ranks) and, before launching on 4 GPUs,
checks the loss in one process: the global batch is cut into the 4 rank shards, a hand-written `all_gather`
stand-in concatenates the shards' features, each "rank" computes its local loss and the ranks' losses are
averaged as DDP averages their gradients. The labels are kept rank-local, `torch.arange(local_batch)`, but the
columns of the gathered logits run over all ranks: only rank 0's rows point at their own captions; rank r > 0's
image i is told its caption is rank 0's caption i (and its text i rank 0's image i). Three quarters of the rows
are trained towards unrelated pairs, so the loss stays high. Public threads: modelscope/ms-swift#10069
("Megatron InfoNCE gathers embeddings across the data-parallel group but keeps rank-local labels. The loss
consequently splits the global embeddings using an incomplete set of sample boundaries, omitting or
misassigning other ranks' examples"); nomewang/M3DM#7 (`labels = (torch.arange(N, dtype=torch.long) + N *
torch.distributed.get_rank())` - the rank offset the labels need exactly when the logits span gathered
features, and must not have otherwise; maintainer: "The contrastive code indeed has a bug in multiple GPU
training"); lightly-ai/lightly#1177 (labels "increased by rank * batch_size" only where the logits are
gathered).
Thread: modelscope/ms-swift#10069; nomewang/M3DM#7; lightly-ai/lightly#1177.
Fix: `labels = torch.arange(LOCAL) + rank * LOCAL`.
Validated without the tool (seeds 0,1,2; 90 steps; 4 simulated ranks x 16 = 64 candidates; final = mean of the
last 5 steps): fault final loss 4.069/3.972/4.009 (= 0.978/0.955/0.964 ln(64)); fixed 0.206/0.217/0.257 (= 0.050/0.052/0.062 ln(64)).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import ResamplerAligner, token_pairs

THREADS = ("modelscope/ms-swift#10069", "nomewang/M3DM#7", "lightly-ai/lightly#1177")
CAUSE = "wrong_targets"
FAMILY = "distributed"
WORLD, LOCAL = 4, 16
BATCH = WORLD * LOCAL


def all_gather(shards):
    """Single-process stand-in for torch.distributed.nn.all_gather: every rank sees all ranks' features
    (with their gradients), in rank order."""
    return torch.cat(shards, dim=0)


def train(watch, steps: int = 90, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            shards = [model(tokens[i], texts[i]) for i in idx.chunk(WORLD)]     # each rank's local forward
            all_img = all_gather([s[0] for s in shards])
            all_txt = all_gather([s[1] for s in shards])
            scale = model.logit_scale.exp()
            losses, rows, targets = [], [], []
            for rank, (img, txt) in enumerate(shards):
                logits_per_image = scale * img @ all_txt.t()                  # (LOCAL, WORLD * LOCAL)
                logits_per_text = scale * txt @ all_img.t()
                if fixed:
                    labels = torch.arange(LOCAL) + rank * LOCAL
                else:
                    labels = torch.arange(LOCAL)                               # the bug: rank-local labels
                losses.append(0.5 * (F.cross_entropy(logits_per_image, labels)
                                     + F.cross_entropy(logits_per_text, labels)))
                rows.append(logits_per_image)
                targets.append(labels)
            loss = torch.stack(losses).mean()                                  # DDP averages the ranks
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": all_img, "text": all_txt},
                      logits=torch.cat(rows), targets=torch.cat(targets), batch_size=BATCH, candidates=BATCH)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
