"""Packed (NaViT-style) Perceiver resampler whose SDPA fallback drops the block-diagonal attention bias:
every image's latents attend to the tokens of the whole batch.

What the user did: images arrive at native resolution, so each one has its own number of patch tokens
(8 to 16 here). Instead of padding, the user packs the frozen backbone's patch tokens of the whole batch
into one sequence, the way DINOv2/xformers code does it (`get_attn_bias_and_cat`): a Flamingo-style
Perceiver resampler (latents concatenated to the keys, as in flamingo-pytorch) runs its cross-attention
over the packed sequence, and a block-diagonal `attn_bias` (xformers' `BlockDiagonalMask`) is the only thing
keeping image i's latent queries off image j's tokens. The attention helper calls
`xformers.ops.memory_efficient_attention(q, k, v, attn_bias=attn_bias)` when xformers is there and falls
back to `F.scaled_dot_product_attention` otherwise -- but the fallback is called as `_fallback_attention(q,
k, v)`, without the bias. On a machine without xformers (this CPU box; Hopper/Blackwell GPUs in the
thread) the mask silently disappears.

What went wrong, and why: without the bias every latent query attends over the concatenated tokens (and
latents) of all images in the batch. The latents are the same learned vectors for every image, so the
queries of image i and image j are identical and they attend over the identical packed key set: every image
gets exactly the same resampler output, layer after layer. All image embeddings are one vector, every row
of the logit matrix is the same, and the InfoNCE loss cannot go below ln(B) -- nothing about an image reaches
its own embedding. "Dropping it silently blends the whole batch together: features stop depending on their
own image, and the damage grows with batch size" (the thread). The loss looks merely flat; no error, no NaN.

Thread: NVIDIA-TAO/tao-pytorch#96 -- `MemoryEfficientAttention.forward` passed `attn_bias` to xformers but
called `self._fallback_attention(q, k, v)` without it; the SSL blocks concatenate the crop list into one
sequence, so the block-diagonal bias is the only thing preventing image i's tokens from attending to image
j's; on GPUs without the xformers path the whole batch blends (CLS cosine to the reference 0.193 at batch 8,
k-NN 82.4% -> 4.0%). Fix: honour `attn_bias` in the fallback (apply the block-diagonal mask).

Fix (fixed=True): the fallback gets the bias, `_fallback_attention(q, k, v, attn_bias)`; each image's
latents attend only to their own tokens and latents.

Validation (validate.py, seeds 0/1/2, 100 steps, B=64, ln(64)=4.1589; final loss, ratio = final/ln B):
  fault: 4.1621 / 4.1633 / 4.1678 (ratio 1.0008 / 1.0011 / 1.0022)
  fixed: 0.1404 / 0.1046 / 0.1154 (ratio 0.0338 / 0.0252 / 0.0277)

Ground truth: pooling_axis.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from common import DT, D, E, token_pairs
from torch import nn

THREADS = ("NVIDIA-TAO/tao-pytorch#96",)
CAUSE = "pooling_axis"
FAMILY = "architecture"

B = 64
LATENTS = 8
HEADS, DIM_HEAD = 2, 8

try:  # the fast path; not installed here, as on the thread's Hopper/Blackwell machines
    import xformers.ops as xops  # type: ignore

    _XFORMERS = True
except ImportError:  # pragma: no cover - depends on the machine
    xops = None
    _XFORMERS = False


def block_diagonal_bias(q_lens: list[int], kv_lens: list[int]) -> torch.Tensor:
    """Additive (sum q, sum kv) bias: 0 inside each sample's block, -inf elsewhere (xformers'
    BlockDiagonalMask.from_seqlens(q_lens, kv_lens), materialised)."""
    bias = torch.full((sum(q_lens), sum(kv_lens)), float("-inf"))
    qs = ks = 0
    for ql, kl in zip(q_lens, kv_lens):
        bias[qs:qs + ql, ks:ks + kl] = 0.0
        qs, ks = qs + ql, ks + kl
    return bias


def _fallback_attention(q, k, v, attn_bias=None):
    """PyTorch SDPA on xformers' (1, N, heads, dim_head) layout."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    mask = None if attn_bias is None else attn_bias[None, None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)


def memory_efficient_attention(q, k, v, attn_bias=None):
    """The user's attention op, as in the thread: xformers if present, else the SDPA fallback."""
    if _XFORMERS:
        return xops.memory_efficient_attention(q, k, v, attn_bias=attn_bias)
    return _fallback_attention(q, k, v)  # BUG: attn_bias silently dropped on the fallback path


def memory_efficient_attention_fixed(q, k, v, attn_bias=None):
    """The thread's fix: the fallback honours the block-diagonal bias."""
    if _XFORMERS:
        return xops.memory_efficient_attention(q, k, v, attn_bias=attn_bias)
    return _fallback_attention(q, k, v, attn_bias)


class PackedPerceiverAttention(nn.Module):
    """flamingo-pytorch's PerceiverAttention (norms, q from latents, k/v from [media; latents]) on a packed
    batch: media (sum n_i, D), latents (B*L, D)."""

    def __init__(self, dim=D, heads=HEADS, dim_head=DIM_HEAD, attention_op=memory_efficient_attention):
        super().__init__()
        self.heads, self.dim_head, self.attention_op = heads, dim_head, attention_op
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(dim, 2 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, media, latents, seqlens):
        x, lat = self.norm_media(media), self.norm_latents(latents)
        # keys/values per image: [its tokens; its latents], packed image after image
        chunks = []
        for tok, la in zip(x.split(seqlens), lat.split(LATENTS)):
            chunks += [tok, la]
        kv_in = torch.cat(chunks)
        kv_lens = [n + LATENTS for n in seqlens]
        q = self.to_q(lat).view(1, -1, self.heads, self.dim_head)
        k, v = self.to_kv(kv_in).chunk(2, dim=-1)
        k = k.reshape(1, -1, self.heads, self.dim_head)
        v = v.reshape(1, -1, self.heads, self.dim_head)
        attn_bias = block_diagonal_bias([LATENTS] * len(seqlens), kv_lens)
        out = self.attention_op(q, k, v, attn_bias=attn_bias)
        return self.to_out(out.reshape(-1, self.heads * self.dim_head))


class PackedResampler(nn.Module):
    def __init__(self, dim=D, depth=2, attention_op=memory_efficient_attention):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(LATENTS, dim))
        self.layers = nn.ModuleList([nn.ModuleList([
            PackedPerceiverAttention(dim, attention_op=attention_op),
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim, bias=False), nn.GELU(),
                          nn.Linear(4 * dim, dim, bias=False)),
        ]) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, packed_tokens, seqlens):
        lat = self.latents.repeat(len(seqlens), 1)  # (B*L, D)
        for attn, ff in self.layers:
            lat = attn(packed_tokens, lat, seqlens) + lat
            lat = ff(lat) + lat
        return self.norm(lat).view(len(seqlens), LATENTS, -1)


class PackedAligner(nn.Module):
    def __init__(self, attention_op=memory_efficient_attention):
        super().__init__()
        self.resampler = PackedResampler(attention_op=attention_op)
        self.proj = nn.Linear(D, E)
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, token_list, texts):
        seqlens = [len(t) for t in token_list]
        lat = self.resampler(torch.cat(token_list), seqlens)  # one packed sequence, no padding
        img = F.normalize(self.proj(lat.mean(1)), dim=-1)
        txt = F.normalize(self.text(texts), dim=-1)
        return img, txt


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, tokens.shape[1] + 1, (len(tokens),), generator=g)  # native-resolution token counts
    model = PackedAligner(memory_efficient_attention_fixed if fixed else memory_efficient_attention)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    labels = torch.arange(B)
    per_epoch = len(tokens) // B
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        if step % per_epoch == 0:
            order = torch.randperm(len(tokens), generator=g)
        idx = order[(step % per_epoch) * B:(step % per_epoch + 1) * B]
        token_list = [tokens[i, :lengths[i]] for i in idx.tolist()]  # variable-length, packed by the model
        img, txt = model(token_list, texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B)
        optimizer.step()
    session.close()
