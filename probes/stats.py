"""Pure tensor statistics behind the probes. No hooks, no state; every function returns tensors
(0-d or 1-d) so callers can defer the host transfer.

References:
  effective rank (RankMe): Garrido et al., "RankMe", ICML 2023 — exp of the Shannon entropy of the
      L1-normalised singular values.
  alignment / uniformity: Wang & Isola, ICML 2020 — on L2-normalised embeddings,
      alignment = E‖x−y‖² over positive pairs (alpha=2), uniformity = log E exp(−2‖x−y‖²) over pairs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def softmax_dim(ndim: int, dim: int | None) -> int:
    """The axis `nn.Softmax(dim=None)` uses (PyTorch's legacy implicit choice)."""
    if dim is None:
        dim = 0 if ndim in (0, 1, 3) else 1
    return dim % max(ndim, 1)


def normalised_entropy(p: Tensor, dim: int = -1) -> Tensor:
    """H(p)/ln(K) along `dim` (removed), in [0, 1] for probability vectors; K = p.shape[dim] >= 2."""
    k = p.shape[dim]
    # p·log p with one temporary, updated in place: xlogy (or a fresh tensor per op) costs 2-5x
    # more on CPU, where this runs inside every hooked softmax. p = 0 gives 0·log(1e-30) = 0.
    plogp = p.clamp_min(1e-30) if p.dtype == torch.float32 else p.float().clamp_min_(1e-30)
    plogp.log_().mul_(p)
    return plogp.sum(dim).mul_(-1.0 / math.log(k))


def entropy_summary(h: Tensor, head_axis: int | None = None) -> dict[str, Tensor]:
    """Mean and min of row entropies `h` over finite rows, non-finite count, and per-head
    `head_mean` / `head_min` (1-d, one value per head) when `head_axis` is given."""
    finite = torch.isfinite(h)
    n_finite = finite.sum()
    zero = torch.zeros((), dtype=h.dtype, device=h.device)
    row_min = torch.where(finite, h, torch.full_like(zero, math.inf)).amin()
    out = {
        "entropy_mean": torch.where(finite, h, zero).sum() / n_finite,  # nan if no finite row
        "entropy_min": torch.where(n_finite > 0, row_min, torch.full_like(zero, math.nan)),
        "nonfinite": (~finite).sum(),
    }
    if head_axis is not None:
        hh = h.movedim(head_axis, 0).reshape(h.shape[head_axis], -1)
        ff = finite.movedim(head_axis, 0).reshape(hh.shape)
        out["head_mean"] = torch.where(ff, hh, zero).sum(1) / ff.sum(1)
        out["head_min"] = torch.where(ff, hh, torch.full_like(zero, math.inf)).amin(1)
    return out


def attention_probs(
    query: Tensor,
    key: Tensor,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """softmax(QKᵀ·scale + mask) as `F.scaled_dot_product_attention` computes it (before dropout)."""
    q, k = query.float(), key.float()
    if enable_gqa and q.dim() >= 3 and k.shape[-3] != q.shape[-3]:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., L, S)
    L, S = scores.shape[-2], scores.shape[-1]
    if is_causal:
        causal = torch.ones(L, S, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~causal, -math.inf)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, -math.inf)
        else:
            scores = scores + attn_mask.float()
    return torch.softmax(scores, dim=-1)


def _l2_normalise(x: Tensor) -> Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def mean_offdiag_cosine(x: Tensor) -> Tensor:
    """Mean cosine similarity over ordered pairs i != j, in O(N·D): (‖Σx̂‖² − Σ‖x̂‖²)/(N(N−1))."""
    n = x.shape[0]
    xn = _l2_normalise(x.float())
    s = xn.sum(0)
    return ((s @ s) - (xn * xn).sum()) / (n * (n - 1))


def singular_values(x: Tensor) -> Tensor:
    """Singular values of (N, D) `x` from the eigenvalues of the smaller Gram matrix (float64)."""
    xd = x.double()
    gram = xd @ xd.T if x.shape[0] <= x.shape[1] else xd.T @ xd
    ev = torch.linalg.eigvalsh(gram).flip(0).clamp_min(0)
    return ev.sqrt()


def effective_rank(sv: Tensor) -> Tensor:
    """RankMe: exp(H(σ/‖σ‖₁)); 1 for a rank-1 matrix, D for a perfectly isotropic one."""
    p = sv / sv.sum().clamp_min(1e-30)
    return torch.exp(-torch.xlogy(p, p).sum())


def uniformity(x: Tensor, t: float = 2.0) -> Tensor:
    """log E_{i≠j} exp(−t‖x̂ᵢ−x̂ⱼ‖²) on L2-normalised rows (Wang & Isola 2020)."""
    xn = _l2_normalise(x.double())
    n = xn.shape[0]
    sq = (2.0 - 2.0 * (xn @ xn.T)).clamp_min(0)
    off = ~torch.eye(n, dtype=torch.bool, device=x.device)
    # the diagonal masked to -inf, not indexed away: a boolean index is a host read (a device sync)
    return torch.logsumexp(torch.where(off, -t * sq, -math.inf).reshape(-1), dim=0) - math.log(n * (n - 1))


def alignment(x: Tensor, y: Tensor) -> Tensor:
    """E‖x̂ᵢ−ŷᵢ‖² over positive pairs (rows with the same index)."""
    return (_l2_normalise(x.float()) - _l2_normalise(y.float())).pow(2).sum(1).mean()


def negative_cosine(x: Tensor, y: Tensor) -> Tensor:
    """Mean cosine of x̂ᵢ·ŷⱼ over the non-matching pairs i != j, in O(B·D): (Σx̂)·(Σŷ) minus the diagonal."""
    xn, yn = _l2_normalise(x.float()), _l2_normalise(y.float())
    n = xn.shape[0]
    if n < 2:
        return torch.tensor(float("nan"), device=x.device)
    total = xn.sum(0) @ yn.sum(0) - (xn * yn).sum()
    return total / (n * n - n)


# Logit scale factors tried by `best_scale_cross_entropy`: 1x to 64x in steps of sqrt(2). Cross-entropy
# of a*z is convex in a, so the grid minimum is within one step of the true one.
SCALE_FACTORS = tuple(2.0 ** (k / 2) for k in range(13))
BATCHED_SCALES_MAX = 1 << 22  # elements of the (factors, B, C) tensor of the batched path: 16 MB in float32


# exp() of the shifted logits below this gives a subnormal float32 (< 2^-126 ~ 1.2e-38), and x86 CPUs
# compute subnormal results several times slower: the sharpest rescalings produce them for most entries
# (torch.logsumexp 5.3 / 7.9 ms vs 1.2 ms on 13 x 8 x 64 x 64 logits at scale 14 / 100). Terms that small
# cannot change a sum whose largest term is exp(0) = 1 (1 + B * 1.6e-38 rounds to 1 for any B < 2^100), so
# raising them to exp(-87) leaves every sum the same to the last bit.
_EXP_FLOOR = -87.0


def _logsumexp(x: Tensor) -> Tensor:
    """torch.logsumexp over the last dim with shifted exponents floored at _EXP_FLOOR (see there); the same
    values, NaN, +-inf rows included, without a host read."""
    m = x.amax(dim=-1, keepdim=True)
    shift = torch.where(torch.isfinite(m), m, torch.zeros((), device=x.device, dtype=x.dtype))
    out = (x - shift).clamp_min_(_EXP_FLOOR).exp_().sum(-1).log_().add_(shift.squeeze(-1))
    return torch.where(m.squeeze(-1) == -math.inf, m.squeeze(-1), out)  # a row of -inf only: log(0)


_FACTORS: dict[tuple[torch.device, torch.dtype], Tensor] = {}


def _scale_factors(device: torch.device, dtype: torch.dtype) -> Tensor:
    """SCALE_FACTORS as a tensor on `device`, made once: a tensor made from a list is a host-to-device copy, which
    waits for the device (a sync on every step that reads the rescaled cross-entropy)."""
    key = (device, dtype)
    if key not in _FACTORS:
        _FACTORS[key] = torch.tensor(SCALE_FACTORS, device=device, dtype=dtype)
    return _FACTORS[key]


def best_scale_cross_entropy(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Row-wise cross-entropy of square logits z (positives on the diagonal) as they are, and the lowest
    cross-entropy any sharper rescaling a*z (a in SCALE_FACTORS) reaches, with that a. On the device,
    no host read: the loss the current ranking would give under a better temperature. A (L, B, B) stack
    gives one value per matrix (1-d, L)."""
    z = z.float()
    pos = z.diagonal(dim1=-2, dim2=-1)
    factors = _scale_factors(z.device, z.dtype)
    scale = factors.reshape(-1, *([1] * z.dim()))
    if z.numel() * len(SCALE_FACTORS) <= BATCHED_SCALES_MAX:  # every factor in one batched op (runs every step)
        ce = (_logsumexp(scale * z) - scale.squeeze(-1) * pos).mean(-1)  # (K,) or (K, L)
    else:  # a large matrix: one factor at a time, so memory stays that of z
        ce = torch.stack([(_logsumexp(a * z) - a * pos).mean(-1) for a in SCALE_FACTORS])
    i = torch.argmin(torch.nan_to_num(ce, nan=float("inf")), dim=0)
    best = ce.gather(0, i.unsqueeze(0)).squeeze(0)
    return ce[0], best, factors[i]


def _cheap_masked(x: Tensor, finite: Tensor) -> dict[str, Tensor]:
    """norm_mean, cosine_mean, dim_std_mean over the finite rows of x, without dropping rows (a
    dynamic shape needs a host read); same values as the dropped-row computation."""
    n_rows, d = x.shape
    out = {"n": finite.sum().float(), "dim": torch.tensor(float(d), device=x.device)}
    if n_rows == 0:
        return out
    x = torch.where(finite.unsqueeze(1), x, torch.zeros((), device=x.device))
    n = out["n"]
    norms = torch.linalg.vector_norm(x, dim=1)
    out["norm_mean"] = norms.sum() / n
    if n_rows < 2:
        return out
    xn = x / norms.clamp_min(1e-12).unsqueeze(1)
    s = xn.sum(0)
    out["cosine_mean"] = ((s @ s) - (norms > 0).sum()) / (n * (n - 1))
    mean = s / n
    var = (xn.pow(2).sum(0) - n * mean.pow(2)) / (n - 1)  # the unbiased std of torch.std
    out["dim_std_mean"] = var.clamp_min(0).sqrt().mean()
    return out


def collapse_metrics(x: Tensor, expensive: bool = True, max_pairs_rows: int = 1024) -> dict[str, Tensor]:
    """Representation-collapse statistics of an (N, D) batch of embeddings.

    Rows holding NaN/Inf are dropped and counted (`nonfinite_rows`). Cheap metrics are O(N·D);
    `expensive` adds the spectrum (effective rank, top singular direction's share of energy) and
    uniformity (on at most `max_pairs_rows` rows).
    """
    x = x.detach()
    if x.dim() != 2:
        x = x.reshape(x.shape[0], -1)
    x = x.float()
    finite_rows = torch.isfinite(x).all(1)
    out: dict[str, Tensor] = {"nonfinite_rows": x.shape[0] - finite_rows.sum()}
    if not expensive:
        # no host read on the cheap path (it would sync the device every step): non-finite rows are
        # masked instead of dropped; if fewer than two rows are finite the metrics are NaN
        return {**out, **_cheap_masked(x, finite_rows)}
    if not bool(finite_rows.all()):
        x = x[finite_rows]
    n, d = x.shape
    out["n"] = torch.tensor(float(n))
    out["dim"] = torch.tensor(float(d))
    if n == 0:
        return out
    norms = torch.linalg.vector_norm(x, dim=1)
    out["norm_mean"] = norms.mean()
    if n < 2:
        return out
    xn = x / norms.clamp_min(1e-12).unsqueeze(1)
    s = xn.sum(0)
    # Σᵢ‖x̂ᵢ‖² is the number of non-zero rows: no second pass over x̂ for the diagonal
    out["cosine_mean"] = ((s @ s) - (norms > 0).sum()) / (n * (n - 1))
    out["dim_std_mean"] = xn.std(0).mean()  # ≈ 1/√D when spread, → 0 when collapsed
    if expensive:
        sv = singular_values(x)
        out["effective_rank"] = effective_rank(sv)
        out["effective_rank_frac"] = out["effective_rank"] / min(n, d)
        out["top_sv_share"] = sv[0].pow(2) / sv.pow(2).sum().clamp_min(1e-30)
        out["uniformity"] = uniformity(x[:max_pairs_rows])
    return out
