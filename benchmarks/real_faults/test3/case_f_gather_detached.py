"""Contrastive training written for DDP, run under torchrun with one process (gloo, world size 1) while
debugging. The user's `all_gather_features` helper gathers image and text embeddings with
`torch.distributed.all_gather` into freshly allocated buffers, but never puts the local tensor (the one with
a graph) back into its slot, as FlagEmbedding's `_dist_gather_tensor` does with
`all_tensors[self.process_rank] = t`. `all_gather` copies values only: the logits are built from tensors
without a grad_fn, the backward reaches the learnable logit scale and nothing else, and the towers never move.
There is no error because the logit scale keeps the loss in the graph.
Threads: huggingface/accelerate#1154 ("So `the gradients will be averaged` is not equivalent to increasing the
`batch_size of contrastive learning`. I would like to know how to implement a gather function that
`preserves the gradient`"); facebookresearch/vissl#474 ("It's great to know that your gather implementation
doesn't cut off the gradient, which I think answers exactly the main issue").
Fix: `out[dist.get_rank()] = x` in the gather helper (the local shard keeps its gradient).
Validated without the tool (seeds 0,1,2; 80 steps; batch 64 on one rank, candidates 64; final = mean of the
last 5 steps): fault final loss 5.761/5.306/5.437 (= 1.385/1.276/1.307 ln(64): the towers never move, only the
logit scale does); fixed 0.169/0.163/0.174 (= 0.041/0.039/0.042).
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import shutil, tempfile
import torch
import torch.distributed as dist
from common import ResamplerAligner, token_pairs, clip_loss

THREADS = ("huggingface/accelerate#1154", "facebookresearch/vissl#474")
CAUSE = "no_gradient_path"
FAMILY = "distributed"
BATCH = 64  # per rank


def all_gather_features(x: torch.Tensor, keep_local_grad: bool = False) -> torch.Tensor:
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    if keep_local_grad:
        out[dist.get_rank()] = x               # the fix
    return torch.cat(out)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    own_group = not dist.is_initialized()
    if own_group:                               # torchrun --nproc-per-node 1 would set this up from the env
        store = tempfile.mkdtemp(prefix="gloo_")
        dist.init_process_group("gloo", init_method=f"file://{store}/init", rank=0, world_size=1)
    try:
        torch.manual_seed(seed)
        tokens, texts = token_pairs(1024, seed)
        model = ResamplerAligner()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        with watch(model, opt, batch_size=BATCH) as w:
            for step in range(steps):
                idx = torch.randint(0, len(tokens), (BATCH,))
                img, txt = model(tokens[idx], texts[idx])
                all_img = all_gather_features(img, fixed)
                all_txt = all_gather_features(txt, fixed)
                scale = model.logit_scale.exp()
                logits = scale * all_img @ all_txt.t()
                loss = clip_loss(logits)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, candidates=len(all_txt), inputs=tokens[idx],
                          extras={"logit_scale": scale})
                opt.step()
    finally:
        if own_group:
            dist.destroy_process_group()
            shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
