"""bf16 autocast opened once around the whole training loop: the forward keeps reading the casts of the
step-0 weights, so the optimizer's updates never reach the model and the contrastive loss stays flat.

What the user did: a flamingo-pytorch PerceiverResampler aligner (patch tokens -> resampler -> mean ->
projection; text -> projection; learnable logit scale; CLIP loss), fp32 master weights, AdamW, and
mixed precision by a single `with torch.autocast(dtype=torch.bfloat16):` wrapped around the entire
`for step in ...` loop (forward, backward and `optimizer.step()` all inside it) instead of around each
forward pass. (CPU autocast here; the thread's runs were on CUDA, where the cache works the same way.)

What went wrong and why: inside an autocast region, the first matmul / linear that uses an fp32 leaf
parameter that requires grad caches its bf16 cast (keyed by the tensor), and every later use in the same
region reuses the cached copy; the cache is only cleared when the outermost autocast context exits.
`optimizer.step()` updates the fp32 parameters in place, which the cache does not notice, so every
forward after step 0 runs on the bf16 copies of the *initial* projection, attention and feed-forward
weights. Backward still flows through the cached casts into the fp32 weights, the optimizer still moves
them, but the tensors the loss is computed from never change: only what is not cast (logit scale,
LayerNorms, the resampler latents, which enter through a non-leaf `repeat`) keeps training. The loss
drops from its step-0 value (1.4-1.5 x ln(B)) to about ln(B) with those and stays there: the image and
text embeddings come out of the frozen step-0 projections and never align.

Thread: X-GenGroup/Flow-Factory#186 ("per-forward autocast to avoid stale weight cache (zero KL / frozen
fp32 training)": "torch.autocast's weight cache (keyed by tensor data_ptr) serves stale fp32->bf16 casts
after any in-place weight change. A single outer `with self.autocast()` around an `optimize()` loop
masked both `optimizer.step()` updates ... For `master_weight_dtype: fp32` runs this froze training
(flat loss)"). Fix, as merged there: autocast per forward (fixed=True: the `with torch.autocast(...)`
block moves inside the loop around the forward and the loss only).

Ground truth mapping: the weights the forward computes with (the cached bf16 casts) are not the tensors
the optimizer updates; the optimizer's param groups hold fp32 tensors the forward no longer reads, so
the model that produces the loss is never optimized: param_not_in_optimizer is the closest cause id.

Validation (validate.py --half test29, seeds 0/1/2, 100 steps, B = 32, ln(B) = 3.4657):
fault: final loss 3.7969 / 3.4658 / 3.8225, final / ln(B) = 1.0955 / 1.0000 / 1.1029;
fixed: final loss 0.0839 / 0.0963 / 0.0893, final / ln(B) = 0.0242 / 0.0278 / 0.0258.

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import contextlib

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("X-GenGroup/Flow-Factory#186",)
CAUSE = "param_not_in_optimizer"
FAMILY = "mixed precision"


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B = 32
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)

    def train_step(step, forward_ctx):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        with forward_ctx:
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
        optimizer.zero_grad()

    session = watch(model, optimizer, batch_size=B)
    if not fixed:
        # the user's script: mixed precision switched on once, around the whole training loop
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for step in range(steps):
                train_step(step, contextlib.nullcontext())
    else:
        # the fix from the thread: one autocast region per forward (and loss)
        for step in range(steps):
            train_step(step, torch.autocast("cpu", dtype=torch.bfloat16))
    session.close()
