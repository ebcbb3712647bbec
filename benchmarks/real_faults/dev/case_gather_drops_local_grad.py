"""Features gathered across ranks with `torch.distributed.all_gather`, which returns tensors with no
autograd history, and the local shard never put back: the contrastive loss then reaches only the logit
scale, and neither tower gets a gradient.

Threads: mlfoundations/open_clip#616 (the non-differentiable gather has to be followed by
`gathered[dist.get_rank()] = tensor`, or use `torch.distributed.nn.all_gather`), pytorch/pytorch#58005
(all_gather does not propagate gradients). open_clip's own `gather_features` keeps the local features
for that reason. Here: a flamingo-pytorch resampler aligner, gloo process group (world size 1, so it
runs in one process), the gather helper missing that line.
Ground truth: no_gradient_path.
"""

from __future__ import annotations

import tempfile

import torch
import torch.distributed as dist

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("mlfoundations/open_clip#616", "pytorch/pytorch#58005")
CAUSE = "no_gradient_path"
FAMILY = "distributed"
BATCH = 32


def gather(t: torch.Tensor) -> torch.Tensor:
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    # BUG: missing `out[dist.get_rank()] = t`, so the local features lose their autograd history
    return torch.cat(out)


def train(watch, steps: int = 60, seed: int = 0) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=0, world_size=1)
        try:
            world = dist.get_world_size()
            with watch(model, opt, batch_size=BATCH, candidates=BATCH * world) as w:
                for step in range(steps):
                    idx = torch.randint(0, len(tokens), (BATCH,))
                    img, txt = model(tokens[idx], texts[idx])
                    all_img, all_txt = gather(img), gather(txt)
                    logits = model.logit_scale.exp() * all_img @ all_txt.t()
                    loss = clip_loss(logits)
                    opt.zero_grad()
                    loss.backward()
                    w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                              batch_size=BATCH, candidates=BATCH * world, inputs=tokens[idx],
                              extras={"logit_scale": model.logit_scale.exp()})
                    opt.step()
        finally:
            dist.destroy_process_group()
