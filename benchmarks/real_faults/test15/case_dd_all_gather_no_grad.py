"""A user moves a CLIP-style resampler aligner from 1 GPU to 4. To get the global batch as negatives they
gather the image and text features of every rank with `torch.distributed.all_gather` (their torch had no
`dist.nn.all_gather` at hand) and compute the global logits `all_img @ all_txt.T` with `arange(4 * B)`
targets on each rank. `dist.all_gather` is not differentiable: the gathered tensors carry no graph, the
rank's own shard included, so only the logit scale is left in the loss graph (which is why backward does
not even raise). On 1 GPU the loss fell; on 4 it "won't go down" and stays at its start, above ln(4B). Simulated here in one
process: 4 ranks share one model replica; each rank's loss is backpropagated and DDP averages them.
Thread: 3dlg-hcvc/DuoduoCLIP#10 ("when I replace dist.nn.all_gather with dist.all_gather, it shows no gradient ... the loss won't go down"); OFA-Sys/Chinese-CLIP#54 ("torch.distributed.all_gather出来的结果gathered_image_features没有梯度")
Fix: put the rank's own (differentiable) shard back into the gathered list: `gathered[rank] = local` (open_clip's gather_features).
Validated without the tool (seeds 0,1,2; 100 steps; 4 ranks x batch 16 = 64 candidates, chance ln(64); final = mean of the last 5 steps): fault final loss 5.67/5.34/5.28 (= 1.36/1.28/1.27 ln(B)); fixed 0.11/0.12/0.11 (= 0.03/0.03/0.03 ln(B)).
Ground truth: distributed_gradient_missing.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("3dlg-hcvc/DuoduoCLIP#10", "OFA-Sys/Chinese-CLIP#54")
CAUSE = "distributed_gradient_missing"
FAMILY = "distributed"
BATCH = 16  # per rank
WORLD = 4


def all_gather(shards: list, rank: int, fixed: bool = False) -> torch.Tensor:
    """What `dist.all_gather(gathered, local)` hands rank `rank`: copies of every rank's tensor, no autograd."""
    gathered = [s.detach().clone() for s in shards]
    if fixed:
        gathered[rank] = shards[rank]
    return torch.cat(gathered)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    g = torch.Generator().manual_seed(seed)
    model = ResamplerAligner()  # one replica stands for the 4 identical DDP replicas
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    n = WORLD * BATCH
    labels = torch.arange(n)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randperm(len(tokens), generator=g)[:n].view(WORLD, BATCH)  # DistributedSampler shards
            outs = [model(tokens[i], texts[i]) for i in idx]  # each rank's forward on its own shard
            imgs, txts = [o[0] for o in outs], [o[1] for o in outs]
            scale = model.logit_scale.exp()
            losses, rank0_logits = [], None
            for rank in range(WORLD):
                all_img = all_gather(imgs, rank, fixed)
                all_txt = all_gather(txts, rank, fixed)
                logits = scale * all_img @ all_txt.t()
                losses.append(clip_loss(logits))
                if rank == 0:
                    rank0_logits = logits
            loss = torch.stack(losses).mean()  # DDP: gradients averaged over ranks
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": losses[0]}, embeddings={"image": imgs[0], "text": txts[0]},
                      logits=rank0_logits, batch_size=BATCH, candidates=n, inputs=tokens[idx[0]],
                      extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
