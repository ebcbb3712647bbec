"""Data-parallel CLIP alignment on 8 GPUs x 8 pairs, features all-gathered so the loss scores 64 candidates, but
the DataLoader has no DistributedSampler: every rank builds the same shuffled loader (every rank calls
`torch.manual_seed(args.seed)` first), so all 8 ranks load the same 8 pairs each step. PatrickHua/SimSiam#16:
"I find that there is no "DistributedSampler" in the code ... this setting would make the model run the same data
twice (or the number of GPU) in a single epoch"; EleutherAI/oslo#60 adds it because "DistributedSampler provides data
to each model (per GPU) in DDP without duplication". For a contrastive loss over gathered features this is worse than
wasted compute: each pair appears 8 times among the 64 gathered candidates, and the diagonal targets score the 7
other copies of the matching caption (and image) as negatives, so the loss cannot go below ln(8) = ln(64)/2 however
well the model aligns, and every gradient also pushes each caption away from its own image. The 8 ranks are simulated
in one process (the gathered batch is the 8 local batches stacked; the loss is the gathered 64 x 64 CLIP loss that
every rank computes, open_clip's `local_loss=False`).
Thread: PatrickHua/SimSiam#16 ("Is "DistributedSampler" necessary？"); EleutherAI/oslo#60 ("without duplication").
Fix: `sampler = DistributedSampler(...)`: each rank takes its own shard of one shared permutation.
Validated without the tool (seeds 0,1,2; 100 steps; 8 ranks x 8 = batch 64; final = mean of the last 5 steps): fault final loss
2.1345/2.1126/2.1406 (= 0.513/0.508/0.515 ln(64), just above the ln(8) = 2.0794 floor); fixed 0.1065/0.1057/0.1097
(0.026/0.025/0.026 ln(64)).
Ground truth: false_negatives.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("PatrickHua/SimSiam#16", "EleutherAI/oslo#60")
CAUSE = "false_negatives"
FAMILY = "distributed"
WORLD, B_LOCAL = 8, 8
BATCH = WORLD * B_LOCAL


def local_batch(rank, step, n, seed, distributed_sampler):
    # every rank shuffles with the same seed, so every rank draws the same permutation
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + step))
    if distributed_sampler:   # DistributedSampler: each rank takes its own shard of the shared permutation
        return perm[rank * B_LOCAL:(rank + 1) * B_LOCAL]
    return perm[:B_LOCAL]     # plain shuffled loader in every rank: identical batches everywhere


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=0)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.cat([local_batch(r, step, len(tokens), seed, fixed) for r in range(WORLD)])
            img, txt = model(tokens[idx], texts[idx])          # = all_gather of the 8 ranks' features
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()                     # (64, 64) gathered logits
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, candidates=BATCH, inputs=tokens[idx], extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
