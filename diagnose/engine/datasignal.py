"""Data signal: is there anything to learn? A check on paired inputs that needs no training.

A linear map from pooled image features to text features is fitted in closed form (ridge) on one
part of a sample of pairs, and scored by held-out retrieval on the other part: each held-out image's
predicted text vector ranks the held-out captions (cosine), R@1 against chance 1/N.

- Regulariser: generalised cross-validation on the fit part only (Golub, Heath & Wahba 1979), over a
  log grid of lambda relative to the mean eigenvalue of X'X; the held-out part is never used to pick it.
- Significance: a permutation baseline. Re-pairing the held-out captions at random gives the hit
  count of "no signal" exactly (the fitted map and the candidates stay the same); p = (1 + #{null hits
  >= observed}) / (K + 1). The pairs carry linear signal when p <= alpha (default 0.01, K = 999).
  `detectable_r@1` is the smallest R@1 that would have passed at this sample size.

Features with a large component shared by every item (transformer anisotropy) are centred on the fit
part's means first, so that component cannot pass for signal. A linear probe finds linear signal:
"no signal" is a statement about what a linear map can recover, which is what the reference models
(linear projections and a pooling) can learn from the frozen features.

Pure computation on tensors: no I/O, no printing (the CLI and `diagnose.watch` own those). The pairs of a
reference config's training data are drawn by `diagnose.lab.signal_inputs`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ..core.rules.data import ALPHA, MIN_TEST, PERMUTATIONS, TARGET  # shared with the rule and the CLI

FIT_FRACTION = 0.5
SAMPLE = 1024  # pairs drawn from a run's training data (cost: one pass over them, a few hundred ms)
LAMBDA_GRID = tuple(10.0 ** e for e in range(-4, 4))  # x mean eigenvalue of the centred X'X


@dataclass
class DataSignal:
    r1: float  # held-out R@1, mean of image->text and text->image
    i2t_r1: float
    t2i_r1: float
    chance_r1: float  # 1 / n_test
    hits: int  # image->text hits: the statistic tested
    p_value: float  # permutation p of `hits` (one-sided)
    significant: bool  # p_value <= alpha
    detectable_r1: float  # the smallest image->text R@1 that would have been significant
    n_fit: int
    n_test: int
    dim_image: int
    dim_text: int
    ridge_lambda: float
    alpha: float = ALPHA
    permutations: int = PERMUTATIONS
    rule: str = "ridge, lambda by GCV on the fit part; permutation test on the held-out part"

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    def rows(self) -> list[tuple[str, str, float]]:
        """(target, metric, value) record rows for a probe session."""
        metrics = {"r@1": self.r1, "i2t_r@1": self.i2t_r1, "t2i_r@1": self.t2i_r1, "chance@1": self.chance_r1,
                   "hits": self.hits, "p_value": self.p_value, "significant": float(self.significant),
                   "detectable_r@1": self.detectable_r1, "n_test": self.n_test, "n_fit": self.n_fit,
                   "ridge_lambda": self.ridge_lambda, "alpha": self.alpha}
        return [(TARGET, k, float(v)) for k, v in metrics.items()]


def pool(image: torch.Tensor) -> torch.Tensor:
    """(N, T, D) patch tokens -> (N, D) mean over tokens; (N, D) unchanged."""
    if image.dim() == 3:
        return image.float().mean(dim=1)
    if image.dim() != 2:
        raise ValueError(f"image features: expected (N, T, D) or (N, D), got shape {tuple(image.shape)}")
    return image.float()


def ridge_gcv(x: torch.Tensor, y: torch.Tensor, grid=LAMBDA_GRID) -> tuple[torch.Tensor, float]:
    """Ridge map W (D, Dt) for centred x (n, D), y (n, Dt); lambda minimising GCV (float64 throughout)."""
    n = x.shape[0]
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    s2 = s**2
    uty = u.t() @ y  # (r, Dt)
    scale = float(s2.mean()) if s2.numel() and float(s2.mean()) > 0 else 1.0
    best = (math.inf, grid[0] * scale)
    y_ss = float((y**2).sum())
    for c in grid:
        lam = c * scale
        shrink = s2 / (s2 + lam)  # (r,)
        df = float(shrink.sum())
        if n - df <= 1e-6 * n:
            continue
        # ||y - H y||^2 = ||y||^2 - ||U'y||^2 + ||(1 - shrink) U'y||^2
        rss = y_ss - float((uty**2).sum()) + float((((1 - shrink)[:, None]) * uty).pow(2).sum())
        gcv = n * max(rss, 0.0) / (n - df) ** 2
        if gcv < best[0]:
            best = (gcv, lam)
    lam = best[1]
    w = vh.t() @ ((s / (s2 + lam))[:, None] * uty)
    return w, lam


def _best_hits(sim: torch.Tensor) -> torch.Tensor:
    """best[i, j]: candidate j is ranked first for query i (no candidate scored strictly higher)."""
    return sim >= sim.max(dim=1, keepdim=True).values


def data_signal(image: torch.Tensor, text: torch.Tensor, *, fit_fraction: float = FIT_FRACTION, seed: int = 0,
                permutations: int = PERMUTATIONS, alpha: float = ALPHA,
                test: tuple[torch.Tensor, torch.Tensor] | None = None) -> DataSignal:
    """Held-out linear retrieval of `text` from `image` (pairs by row), with its permutation p-value.

    `image`: (N, T, D) tokens or (N, D) pooled features; `text`: (N, Dt). With `test` given, the map
    is fitted on all of (image, text) and scored on `test`; otherwise a seeded split by `fit_fraction`.
    Non-finite features give NaN scores and `significant=False`, never a score.
    """
    x_all, y_all = pool(image).double(), text.double()
    if y_all.dim() != 2 or y_all.shape[0] != x_all.shape[0]:
        raise ValueError(f"text features: expected ({x_all.shape[0]}, Dt), got shape {tuple(y_all.shape)}")
    if test is not None:
        x_fit, y_fit = x_all, y_all
        x_test, y_test = pool(test[0]).double(), test[1].double()
    else:
        n = x_all.shape[0]
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        k = round(n * fit_fraction)
        x_fit, y_fit, x_test, y_test = x_all[perm[:k]], y_all[perm[:k]], x_all[perm[k:]], y_all[perm[k:]]
    n_fit, n_test = x_fit.shape[0], x_test.shape[0]
    if n_fit < 2 or n_test < MIN_TEST:
        raise ValueError(f"{n_fit} fit and {n_test} held-out pairs: need at least 2 and {MIN_TEST}")
    dims = (x_fit.shape[1], y_fit.shape[1])
    finite = all(bool(torch.isfinite(t).all()) for t in (x_fit, y_fit, x_test, y_test))
    if not finite:
        nan = float("nan")
        return DataSignal(nan, nan, nan, 1 / n_test, 0, nan, False, nan, n_fit, n_test, *dims, nan, alpha, permutations)
    mx, my = x_fit.mean(dim=0), y_fit.mean(dim=0)
    w, lam = ridge_gcv(x_fit - mx, y_fit - my)
    pred = torch.nn.functional.normalize((x_test - mx) @ w, dim=1)
    cand = torch.nn.functional.normalize(y_test - my, dim=1)
    sim = pred @ cand.t()  # (n_test, n_test): rows held-out images, columns held-out captions
    best_i2t, best_t2i = _best_hits(sim), _best_hits(sim.t())
    hits = int(best_i2t.diagonal().sum())
    i2t, t2i = hits / n_test, float(best_t2i.diagonal().double().mean())
    g = torch.Generator().manual_seed(seed + 1)
    perms = torch.argsort(torch.rand(permutations, n_test, generator=g), dim=1)  # (K, n_test) random pairings
    null = best_i2t[torch.arange(n_test), perms].sum(dim=1)  # (K,) hits when captions are re-paired at random
    p = (1 + int((null >= hits).sum())) / (permutations + 1)
    # smallest hit count whose p would be <= alpha: one more than the null's (1 - alpha) tail
    sorted_null = torch.sort(null, descending=True).values
    tail = max(0, math.floor(alpha * (permutations + 1)) - 1)
    need = int(sorted_null[tail]) + 1 if tail < permutations else 1
    return DataSignal(0.5 * (i2t + t2i), i2t, t2i, 1 / n_test, hits, p, p <= alpha, need / n_test, n_fit, n_test,
                      *dims, lam, alpha, permutations)
