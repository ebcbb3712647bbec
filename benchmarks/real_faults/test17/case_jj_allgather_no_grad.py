"""Distributed CLIP loss whose gathered features carry no gradient: torch.distributed.all_gather
copies every rank's features, its own included, into fresh tensors outside autograd.

What the user did: a CLIP-style aligner (flamingo-pytorch PerceiverResampler on frozen patch tokens, a text
projection, open_clip's learnable logit scale) trained under torch.distributed (gloo; here world size 1 so
it runs on one CPU process). To get the global batch of negatives they gathered the image and text features
of all ranks with `dist.all_gather` into a list of empty tensors, `torch.cat`-ed the list and computed the
symmetric InfoNCE loss on the global (N, N) logits. Nothing raises: the learnable logit scale multiplies
the gathered features, so `loss.backward()` finds a tensor that requires grad and runs; the only thing that
receives a gradient is the logit scale. The encoders never move and the loss stays at (or above) ln(N).

From the threads:
- OFA-Sys/Chinese-CLIP#54 (asking why train.py rebuilds the global batch from the local features plus
  the other ranks' gathered ones instead of using `gathered_image_features` directly), answered: "the
  essential reason is that the output of torch.distributed.all_gather, gathered_image_features, has no
  gradient, so training cannot backpropagate through it. Putting image_features back in is what opens
  the backward path" (translated), and "try all_image_features = torch.cat(gathered_image_features)
  and you will see it error" (it errors only when nothing else in the loss needs a gradient).
- huggingface/accelerate#1154: "So `the gradients will be averaged` is not equivalent to increasing the
  `batch_size of contrastive learning`. I would like to know how to implement a gather function that
  `preserves the gradient`." (accelerator.gather, like dist.all_gather, returns tensors without grad.)
- mlfoundations/open_clip#616 shows the open_clip pattern: after `dist.all_gather(gathered, tensor)`,
  `gathered[dist.get_rank()] = tensor` before `torch.cat`.

Thread: OFA-Sys/Chinese-CLIP#54
Thread: huggingface/accelerate#1154
Thread: mlfoundations/open_clip#616
Fix: put this rank's own features (with their autograd graph) back into the gathered list before
concatenating (`gathered[rank] = features`, open_clip's gather_features without gather_with_grad), or use
`torch.distributed.nn.all_gather`.

Validation (benchmarks/real_faults/validate.py --half test17, seeds 0 1 2, B = 64, N = 64 candidates,
ln(N) = 4.1589, 120 steps): fault final loss / ln(N) = 1.0390 / 1.0427 / 1.3162 (loss 4.321 / 4.337 / 5.474,
first step 4.642 / 4.488 / 5.842: only the logit scale is trained, and as it shrinks the loss of the random
features falls toward ln(N) from above); fixed 0.0290 / 0.0254 / 0.0272.

Ground truth: distributed_gradient_missing.
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile

import torch
import torch.distributed as dist

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from common import ResamplerAligner, clip_loss, token_pairs  # noqa: E402

THREADS = ("OFA-Sys/Chinese-CLIP#54", "huggingface/accelerate#1154", "mlfoundations/open_clip#616")
CAUSE = "distributed_gradient_missing"
FAMILY = "distributed"


def gather_features(image_features, text_features, fixed: bool):
    """The user's all-gather of both towers' features across ranks (global batch of negatives)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    gathered_image = [torch.zeros_like(image_features) for _ in range(world)]
    gathered_text = [torch.zeros_like(text_features) for _ in range(world)]
    dist.all_gather(gathered_image, image_features)
    dist.all_gather(gathered_text, text_features)
    if fixed:  # open_clip: keep this rank's tensors, with their graph, in the global batch
        gathered_image[rank] = image_features
        gathered_text[rank] = text_features
    return torch.cat(gathered_image), torch.cat(gathered_text)


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    own_group = not dist.is_initialized()
    if own_group:
        fd, store = tempfile.mkstemp(prefix="jj_gloo_")
        os.close(fd)
        os.remove(store)
        dist.init_process_group("gloo", init_method="file://" + store, rank=0, world_size=1)
    try:
        torch.manual_seed(seed)
        tokens, texts = token_pairs(2048, seed=seed)
        model = ResamplerAligner()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        B = 64
        g = torch.Generator().manual_seed(seed)
        with watch(model, optimizer, batch_size=B) as w:
            for step in range(steps):
                idx = torch.randint(0, len(tokens), (B,), generator=g)
                img, txt = model(tokens[idx], texts[idx])
                all_img, all_txt = gather_features(img, txt, fixed)
                logits = model.logit_scale.exp() * all_img @ all_txt.t()
                loss = clip_loss(logits)
                optimizer.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=B, candidates=len(all_txt), inputs=tokens[idx],
                          extras={"logit_scale": model.logit_scale.exp(), "world_size": dist.get_world_size()})
                optimizer.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, 4.6052)
    finally:
        if own_group:
            dist.destroy_process_group()


if __name__ == "__main__":
    import diagnose

    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
