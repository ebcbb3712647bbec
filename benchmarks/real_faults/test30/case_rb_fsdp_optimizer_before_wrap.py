"""FSDP: the optimizer is built on the model's parameters *before* the model is wrapped, so it never sees
the flat parameter FSDP trains.

What the user did: the nanoGPT-style training script of intelligent-machine-learning/dlrover#584, moved
to FSDP. The script builds the model, builds `AdamW(model.parameters())` right away (as the single-device
script did), then initialises the process group and wraps the model in
`torch.distributed.fsdp.FullyShardedDataParallel` (default `use_orig_params=False`). Here the model is a
patch-token -> flamingo-pytorch PerceiverResampler aligner with a text projection and a learnable logit
scale (made a 1-element tensor, because FSDP refuses 0-d parameters), trained with a symmetric CLIP loss;
the script is launched as a single-process run (world size 1, gloo, CPU), which FSDP runs as NO_SHARD.

What went wrong: "When using FSDP on the nanoGPT model, the loss does not decrease but rather bounces
around the initial value. It is possible that the parameters are not being updated" (dlrover#584); the
same in huggingface/accelerate#2665 ("FSDP Model not learning during training, loss stays constant"),
root-caused in huggingface/accelerate#3256.

Why (the mechanism): with `use_orig_params=False`, FSDP flattens every parameter of the wrapped module
into one new `FlatParameter` (`_fsdp_wrapped_module._flat_param`) and the forward pass reads views of it.
The optimizer, built earlier, still holds the original `nn.Parameter` objects, which are no longer used by
the forward pass and never receive a gradient. `loss.backward()` fills the flat parameter's gradient,
`optimizer.step()` updates tensors the model no longer reads, and nothing the model computes with ever
changes: the loss stays at its initial value (above ln B at the initial logit scale 1/0.07).

Fix (dlrover#585, accelerate#3256): create the optimizer after wrapping, from the wrapped module's
parameters (`AdamW(fsdp_model.parameters())`), or wrap with `use_orig_params=True`.

Validation (validate.py --half test30, 100 steps, B = 32, ln B = 3.466; final = mean of the last 5 steps):
    seed 0: fault 5.2194 (ratio 1.506), fixed 0.0837 (ratio 0.024)
    seed 1: fault 4.9302 (ratio 1.423), fixed 0.0958 (ratio 0.028)
    seed 2: fault 5.0806 (ratio 1.466), fixed 0.0890 (ratio 0.026)

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import math
import os
import tempfile

import torch
import torch.distributed as dist
import torch.nn.functional as F
from common import DT, D, E, clip_loss, token_pairs
from torch import nn

THREADS = ("intelligent-machine-learning/dlrover#584", "huggingface/accelerate#3256",
           "huggingface/accelerate#2665")
CAUSE = "param_not_in_optimizer"
FAMILY = "distributed"


class Aligner(nn.Module):
    """Patch tokens -> flamingo-pytorch PerceiverResampler -> mean over latents -> projection; text ->
    projection; the logit scale is a 1-element parameter (FSDP does not accept scalar parameters)."""

    def __init__(self):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.proj = nn.Linear(D, E)
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.full((1,), math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]
        img = F.normalize(self.proj(lat.mean(1)), dim=-1)
        txt = F.normalize(self.text(texts), dim=-1)
        return img, txt, self.logit_scale.exp()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    B, lr = 32, 1e-3
    tokens, texts = token_pairs(1024, seed=seed)
    torch.manual_seed(seed)
    model = Aligner()
    if not fixed:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)  # before wrapping

    own_group = not dist.is_initialized()
    store = None
    if own_group:  # a single-process launch of the FSDP script
        fd, store = tempfile.mkstemp(prefix="fsdp_store_")
        os.close(fd)
        os.unlink(store)
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    try:
        model = FSDP(model, device_id=torch.device("cpu"))
        if fixed:
            optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)  # after wrapping

        g = torch.Generator().manual_seed(seed)
        session = watch(model, optimizer, batch_size=B)
        try:
            for step in range(steps):
                idx = torch.randint(0, len(tokens), (B,), generator=g)
                img, txt, scale = model(tokens[idx], texts[idx])
                logits = scale * img @ txt.t()
                loss = clip_loss(logits)
                optimizer.zero_grad()
                loss.backward()
                session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                                logits=logits, batch_size=B, inputs=tokens[idx])
                optimizer.step()
        finally:
            session.close()
    finally:
        if own_group:
            dist.destroy_process_group()
            if store and os.path.exists(store):
                os.unlink(store)
