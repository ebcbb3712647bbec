"""A hand-written all_gather for the contrastive loss that cuts every gradient. Users who want the global batch
as negatives wrap torch.distributed.all_gather themselves: allocate zeros_like buffers, all_gather into them, cat,
and compute the CLIP loss on the gathered image and text features. all_gather is not differentiable: the gathered
copies (the local shard included) carry no autograd history, so the loss only reaches the logit scale and the
towers never get a gradient. Here the gather runs as users test it, in one process (gloo, world size 1): the loss
still backpropagates (through logit_scale), nothing errors, and the model never moves.
Thread: HobbitLong/SupContrast#26 ("You can use `all_gather` to gather features together. The caveat is that you
need to manually propagate gradients through `all_gather` op, as it doesn't auto-bp."; "I finally make it work with
the help of diffdist, which provides a differentiable all_gather wrapper").
Fix: put the local shard back into the gathered list before cat (`out[dist.get_rank()] = x`).
Validated without the tool (seeds 0,1,2; 80 steps; batch 64, candidates 64; final = mean of the last 5 steps):
fault final loss 5.766/5.310/5.442 (= 1.387/1.277/1.309 ln(64), first step 6.08/5.36/5.27: only the scale moves);
fixed 0.168/0.163/0.173 (= 0.040/0.039/0.042 ln(64)).
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import os, tempfile
import torch
import torch.distributed as dist
from common import ResamplerAligner, token_pairs, clip_loss

THREADS = ("HobbitLong/SupContrast#26",)
CAUSE = "no_gradient_path"
FAMILY = "distributed"
BATCH = 64


def gather_features(x: torch.Tensor, fixed: bool = False) -> torch.Tensor:
    """Hand-written all_gather so every rank scores its rows against the whole global batch."""
    out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x)
    if fixed:
        out[dist.get_rank()] = x  # the fix: keep the local shard with its autograd history
    return torch.cat(out)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    init_file = tempfile.NamedTemporaryFile(delete=False).name
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=0, world_size=1)
    try:
        tokens, texts = token_pairs(1024, seed=seed)
        model = ResamplerAligner()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
        world = dist.get_world_size()
        with watch(model, opt, batch_size=BATCH, candidates=world * BATCH) as w:
            for step in range(steps):
                idx = torch.randint(0, len(tokens), (BATCH,))
                img, txt = model(tokens[idx], texts[idx])
                all_img, all_txt = gather_features(img, fixed), gather_features(txt, fixed)
                scale = model.logit_scale.exp()
                logits = scale * all_img @ all_txt.t()
                loss = clip_loss(logits)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": all_img, "text": all_txt},
                          logits=logits, batch_size=BATCH, candidates=world * BATCH,
                          extras={"logit_scale": scale})
                opt.step()
    finally:
        dist.destroy_process_group()
        if os.path.exists(init_file):
            os.unlink(init_file)


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
