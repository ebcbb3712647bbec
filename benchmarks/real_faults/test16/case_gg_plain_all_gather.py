"""The user trains a resampler aligner data-parallel on 2 ranks (simulated here in one process, replicas in sync as
under DDP) and gathers every rank's image and text features so each rank scores 2 x 32 candidates. Because
`torch.distributed.nn.all_gather` was not found in the docs, they switched to `torch.distributed.all_gather`,
which fills the output buffers outside autograd; the loss is taken on the concatenated buffers, so it never goes down (it stays above ln(64)).

Thread: mlfoundations/open_clip#1047 ("as I use torch.distributed.all_gather for distributed training, the loss will not go down")
Fix: gather with `torch.distributed.nn.all_gather` (differentiable) instead of `torch.distributed.all_gather`.
Validated without the tool (seeds 0,1,2; 60 steps; batch 32 per rank, 64 candidates; final = mean of the last 5 steps): fault final loss 5.8677/5.3909/5.2696 (= 1.411/1.296/1.267 ln(64)); fixed 0.2095/0.2263/0.2146 (= 0.050/0.054/0.052 ln(64)).
Ground truth: distributed_gradient_missing.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import token_pairs, ResamplerAligner

THREADS = ("mlfoundations/open_clip#1047", "3dlg-hcvc/DuoduoCLIP#10")
CAUSE = "distributed_gradient_missing"
FAMILY = "distributed"
BATCH = 32   # per rank
WORLD = 2


# -- the two collectives, as they behave across WORLD ranks -------------------------------------------------
def dist_all_gather(tensor_list, per_rank):
    """torch.distributed.all_gather(tensor_list, tensor): each rank's tensor is copied into the output list."""
    with torch.no_grad():
        for out, t in zip(tensor_list, per_rank):
            out.copy_(t)


def dist_nn_all_gather(per_rank):
    """torch.distributed.nn.all_gather(tensor): returns the ranks' tensors; the backward sends gradients home."""
    return tuple(per_rank)


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    labels = torch.arange(BATCH * WORLD)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (WORLD, BATCH))  # DistributedSampler: one shard per rank
            feats = [model(tokens[i], texts[i]) for i in idx]     # each rank's forward
            image_feat = [f[0] for f in feats]
            text_feat = [f[1] for f in feats]
            if fixed:
                image_all = list(dist_nn_all_gather(image_feat))
                text_all = list(dist_nn_all_gather(text_feat))
            else:
                image_all = [torch.zeros_like(f) for f in image_feat]
                text_all = [torch.zeros_like(f) for f in text_feat]
                dist_all_gather(image_all, image_feat)
                dist_all_gather(text_all, text_feat)
            image_all, text_all = torch.cat(image_all, dim=0), torch.cat(text_all, dim=0)
            logits = model.logit_scale.exp() * image_all @ text_all.t()
            # every rank computes the same global loss; DDP averages the ranks' gradients
            rank_losses = [0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
                           for _ in range(WORLD)]
            loss = sum(rank_losses) / WORLD
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": rank_losses[0]}, embeddings={"image": image_all, "text": text_all},
                      logits=logits, batch_size=BATCH, candidates=BATCH * WORLD)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
