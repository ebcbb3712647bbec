"""`diagnose datasignal FILE`: is there anything to learn in a features file? No training.

The file is the `features` source format (reference_models/data.py): `image_tokens` (N, T, D) or
pooled image features (N, D), `text` (N, Dt), optionally `val_image_tokens`/`val_text` (then the map is
fitted on the first and scored on the val pair), in .safetensors, .pt (weights_only) or .npz.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import torch
import typer

from reference_models.config import ConfigError
from reference_models.data import read_tensors

from ..console import console
from ..datasignal import MIN_TEST, PERMUTATIONS, PROBE, DataSignal, data_signal
from ..findings import severity_rank
from ..options import FailOnOpt, check_fail_on
from ..rules.base import RunContext
from ..rules.data import NoDataSignal

DEFAULT_SAMPLE = 4096  # pairs used at most (seeded subsample): the test resolves R@1 ~1% at 2048 held out


def _pairs(data: dict, prefix: str, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    key_img, key_txt = f"{prefix}image_tokens", f"{prefix}text"
    for key in (key_img, key_txt):
        if key not in data:
            raise ConfigError(f"{path}: missing tensor '{key}' (found: {', '.join(sorted(data)) or 'none'})")
    img, txt = data[key_img], data[key_txt]
    if not (img.is_floating_point() and txt.is_floating_point()):
        raise ConfigError(f"{path}: '{key_img}'/'{key_txt}' must be floating point, got {img.dtype}/{txt.dtype}")
    if img.dim() not in (2, 3):
        raise ConfigError(f"{path}: '{key_img}' has shape {tuple(img.shape)}, expected (N, T, D) or pooled (N, D)")
    if txt.dim() != 2 or txt.shape[0] != img.shape[0]:
        raise ConfigError(f"{path}: '{key_txt}' has shape {tuple(txt.shape)}, expected ({img.shape[0]}, Dt): one caption "
                          f"feature row per image")
    if not (torch.isfinite(img).all() and torch.isfinite(txt).all()):
        raise ConfigError(f"{path}: '{key_img}'/'{key_txt}' contain NaN or Inf")
    return img, txt


def _subsample(img: torch.Tensor, txt: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if img.shape[0] <= n:
        return img, txt
    idx = torch.randperm(img.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return img[idx], txt[idx]


def check_file(path: Path, sample: int = DEFAULT_SAMPLE, seed: int = 0, permutations: int = PERMUTATIONS) -> DataSignal:
    """The data-signal check on a features file; ConfigError (one line) for anything unusable."""
    data = read_tensors(path)
    img, txt = _subsample(*_pairs(data, "", path), sample, seed)
    test = None
    if "val_image_tokens" in data or "val_text" in data:
        test = _subsample(*_pairs(data, "val_", path), sample, seed + 1)
        if test[0].shape[1:] != img.shape[1:] or test[1].shape[1] != txt.shape[1]:
            raise ConfigError(f"{path}: val_* tensors have shapes {tuple(test[0].shape)}/{tuple(test[1].shape)}, "
                              f"not matching {tuple(img.shape)}/{tuple(txt.shape)}")
        if test[0].shape[0] < MIN_TEST:
            raise ConfigError(f"{path}: {test[0].shape[0]} val pairs: need at least {MIN_TEST}")
    elif img.shape[0] < 2 * MIN_TEST:
        raise ConfigError(f"{path}: {img.shape[0]} pairs: need at least {2 * MIN_TEST} (half fitted, half held out)")
    return data_signal(img, txt, seed=seed, permutations=permutations, test=test)


def datasignal_command(
    file: Annotated[Path, typer.Argument(help="Features file: image_tokens (N,T,D) or (N,D) and text (N,Dt) "
                                              "[+ val_image_tokens, val_text]; .safetensors, .pt or .npz.")],
    sample: Annotated[int, typer.Option("--sample", min=2 * MIN_TEST, help="Use at most this many pairs (seeded subsample).")] = DEFAULT_SAMPLE,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the split, subsample and permutations.")] = None,
    permutations: Annotated[int, typer.Option("--permutations", min=99, help="Random re-pairings in the permutation test.")] = PERMUTATIONS,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    fail_on: FailOnOpt = "error",
) -> None:
    """Is there anything to learn? Held-out retrieval of a closed-form linear map vs chance, no training."""
    check_fail_on(fail_on)
    result = check_file(file, sample, seed or 0, permutations)
    records = pd.DataFrame([{"step": 0, "probe": PROBE, "target": t, "metric": m, "value": v} for t, m, v in result.rows()])
    findings = NoDataSignal()(records, RunContext(file.name))
    if as_json:
        print(json.dumps({"file": str(file), "data_signal": result.to_dict(),
                          "findings": [f.to_dict() for f in findings]}, indent=1))
    else:
        verdict = "signal" if result.significant else "NO signal"
        console.print(f"{file}: {verdict}: held-out R@1 {result.r1:.4f} (image->text {result.i2t_r1:.4f}, text->image "
                      f"{result.t2i_r1:.4f}) vs chance {result.chance_r1:.4f}; permutation p = {result.p_value:.3g} "
                      f"(alpha {result.alpha}); {result.n_fit} pairs fitted, {result.n_test} held out; "
                      f"ridge lambda {result.ridge_lambda:.3g} (GCV)", markup=False)
        for f in findings:
            console.print(f"{f.severity}: {f.id}: {f.message}", markup=False)
    worst = max((severity_rank(f.severity) for f in findings), default=-1)
    raise typer.Exit(1 if worst >= severity_rank(fail_on) else 0)
