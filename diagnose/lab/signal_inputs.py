"""The inputs of the data-signal check (`diagnose.engine.datasignal`): a reference config's training
pairs as the training loop sees them (synthetic, features or encoded images source), or the pairs of a
features file (`diagnose datasignal FILE`)."""

from __future__ import annotations

from pathlib import Path

import torch

from reference_models.data import build_data, read_tensors
from reference_models.train import ShuffledCaptions

from ..core.errors import ConfigError
from ..engine.datasignal import MIN_TEST, PERMUTATIONS, SAMPLE, DataSignal, data_signal, pool


def sample_training_pairs(cfg, seed: int | None = None, n: int = SAMPLE) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `n` pairs of the run's training data as the training loop sees them (misaligned when
    `dataset.shuffle_captions` injects that fault): pooled image features (n, D), text (n, Dt)."""
    seed = cfg.seed if seed is None else seed
    train_src, _ = build_data(cfg, seed)
    if cfg.dataset.shuffle_captions:
        train_src = ShuffledCaptions(train_src, seed)
    m = min(n, train_src.num_samples)
    index = torch.randperm(train_src.num_samples, generator=torch.Generator().manual_seed(seed + 11))[:m]
    images, texts = [], []
    for chunk in index.split(256):  # only a chunk of patch tokens in memory at a time
        tokens, text = train_src.batch(chunk)
        images.append(pool(tokens))
        texts.append(text.float())
    return torch.cat(images), torch.cat(texts)


def run_signal(cfg, seed: int | None = None, n: int = SAMPLE) -> DataSignal:
    """The check on a config's training data (synthetic, features or encoded images source)."""
    img, txt = sample_training_pairs(cfg, seed, n)
    return data_signal(img, txt, seed=cfg.seed if seed is None else seed)


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
        raise ConfigError(f"{path}: '{key_txt}' has shape {tuple(txt.shape)}, expected ({img.shape[0]}, Dt): one "
                          "caption "
                          f"feature row per image")
    if not (torch.isfinite(img).all() and torch.isfinite(txt).all()):
        raise ConfigError(f"{path}: '{key_img}'/'{key_txt}' contain NaN or Inf")
    return img, txt


def _subsample(img: torch.Tensor, txt: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if img.shape[0] <= n:
        return img, txt
    idx = torch.randperm(img.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return img[idx], txt[idx]


def check_file(path: Path, sample: int, seed: int = 0, permutations: int = PERMUTATIONS) -> DataSignal:
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
