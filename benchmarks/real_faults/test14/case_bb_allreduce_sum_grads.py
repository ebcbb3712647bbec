"""A user replaces DDP with a hand-written data-parallel step for a resampler aligner (to keep the contrastive loss
local to each GPU and skip DDP's bucket logic): each rank computes the InfoNCE over its own 32 pairs, calls
`backward()`, and then `dist.all_reduce(p.grad)` on every parameter before `optimizer.step()`. `all_reduce` defaults
to `ReduceOp.SUM`, and the user never divides by the world size, so with 8 ranks every gradient is 8x the average DDP
would produce; with SGD (lr 0.05, momentum 0.9) that is an 8x learning rate. The lr that learns with averaged gradients now
overshoots: single steps rewrite the layers, the embeddings collapse and the loss sits at ln(B). Simulated honestly in one process:
8 ranks' local losses on 8 shards of a 256-pair batch, their gradients summed as all_reduce(SUM) leaves them; rank 0
logs its loss. The U2PL thread on why a loss is divided by the number of GPUs: "this is because `dist.all_reduce`
returns the sum of losses on different GPUs".
Thread: Haochen-Wang409/U2PL#16 ("`dist.all_reduce` returns the sum of losses on different GPUs").
Fix: divide the all-reduced gradients by the world size (average, as DDP does).
Validated without the tool (seeds 0,1,2; 100 steps; batch 32 per rank, 8 ranks; final = mean of the last 5 steps):
fault final loss 3.466/3.466/3.466 (= 1.00/1.00/1.00 ln(B), ln(32) = 3.466); fixed 0.011/0.000/0.002 (= 0.00/0.00/0.00 ln(B), ln(32) = 3.466).
Ground truth: distributed_gradient_scale.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("Haochen-Wang409/U2PL#16",)
CAUSE = "distributed_gradient_scale"
FAMILY = "distributed"
BATCH = 32      # per rank
WORLD = 8
LR = 0.05


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(4096, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (WORLD * BATCH,), generator=g)
            opt.zero_grad()
            for rank in range(WORLD):                           # each rank's local step
                shard = idx[rank * BATCH:(rank + 1) * BATCH]
                img, txt = model(tokens[shard], texts[shard])
                scale = model.logit_scale.exp()
                logits = scale * img @ txt.t()
                loss = clip_loss(logits)
                loss.backward()                                 # grads add up over ranks = all_reduce(SUM)
                if rank == 0:
                    r0 = (loss, img, txt, logits, scale, shard)
            if fixed:
                for p in model.parameters():
                    if p.grad is not None:
                        p.grad /= WORLD                         # average across ranks
            loss, img, txt, logits, scale, shard = r0
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[shard], extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
