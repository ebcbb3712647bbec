"""Data sources: what the frozen backbones would hand the trainable model.

`synthetic` (the embedded default) makes paired "CLIP-like" patch tokens (N, T, D) and pooled text
features (N, Dt) from shared latent concepts. Each property of real CLIP ViT hidden states that can
matter for alignment training is a named knob (config `dataset.synthetic.*`, all relative to the
norm of one token's content part):

- `shared_scale`: a component common to every image and every token. Transformer hidden states are
  strongly anisotropic (Ethayarajh 2019; for ViTs, large shared "massive activation" channels, Sun et
  al. 2024); at the default 2.0, tokens of two unrelated images have cosine ~0.7.
- `high_norm_frac`, `high_norm_scale`: a few patch tokens with ~10x the norm of the others that carry
  little local content ("Vision Transformers Need Registers", Darcet et al. 2024 report ~2% of
  tokens of ViT-L models with such norms).
- `high_norm_content`: those tokens hold the image's *global* information (Darcet et al. 2024, sec. 2:
  linear probes on the outlier tokens classify the image better than probes on normal patches; the
  model repurposes them as CLS-like storage). At 1.0 a high-norm token carries the image's global
  content scaled with the token (`high_norm_scale` x a typical token's content part, about the
  content share of a typical token); at 0.0 it is a constant direction plus 0.1 of its local content.
- `content_frac`, `concept_dim`: per-image content is spread across patch tokens: each token carries
  a random share of the image's concepts, so pooling must aggregate many tokens to recover them.
- `position_scale`: a positional component, the same at a given position for every image.
- `token_noise`, `text_noise`: isotropic noise on tokens; caption noise in concept space (captions
  describe an image imperfectly).
- `text_shared_scale`: anisotropy of the text encoder's pooled outputs.

Tokens have per-element RMS ~1 (the scale of a transformer residual stream before its final norm).
Sample i of a split is a pure function of (seed, split, i), so runs are deterministic and batches
can be drawn in any order without holding the split in memory.

`features`: precomputed tensors in a file (safetensors, `.pt` loaded with `weights_only=True`,
`.npy`/`.npz`), shapes validated against the config.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import torch

from .config import AlignmentConfig, ConfigError

SPLITS = {"train": 0, "val": 1}


class PairSource(Protocol):
    num_samples: int

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) indices -> image tokens (B, T, D), text features (B, Dt)."""
        ...


class SyntheticPairs:
    def __init__(self, cfg: AlignmentConfig, split: str, seed: int):
        s = cfg.dataset.synthetic
        self.knobs = s
        self.T, self.D = cfg.vision_encoder.num_tokens, cfg.vision_encoder.hidden_dim
        self.Dt, self.c = cfg.text_encoder.hidden_dim, s.concept_dim
        self.num_samples = cfg.dataset.num_train if split == "train" else cfg.dataset.num_val
        self.seed, self.split = seed, SPLITS[split]
        # generating parameters: shared by both splits, fixed by the seed
        g = torch.Generator().manual_seed(seed * 7919 + 17)

        def unit(*shape: int) -> torch.Tensor:
            x = torch.randn(*shape, generator=g)
            return x / x.norm(dim=-1, keepdim=True)

        self.image_map = unit(self.c, self.D)  # concept -> token direction
        self.text_map = unit(self.c, self.Dt)
        self.shared = unit(self.D)  # common to every image and token
        self.outlier = unit(self.D)  # direction of high-norm tokens (they resemble each other)
        self.text_shared = unit(self.Dt)
        self.positions = unit(self.T, self.D)  # (T, D)

    def _sample(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, T, D, c = self.knobs, self.T, self.D, self.c
        g = torch.Generator().manual_seed(((self.seed * 1_000_003 + self.split) * 2_147_483 + i) % (2**63 - 1))
        z = torch.randn(c, generator=g)  # the image's concepts
        # content per token: a random share of the concepts, normalised to unit norm on average
        mask = (torch.rand(T, c, generator=g) < s.content_frac).float()
        mask[0] = 1.0  # CLS sees every concept
        content = ((mask * z) @ self.image_map) / math.sqrt(c * s.content_frac)  # (T, D)
        content[0] *= math.sqrt(s.content_frac)
        noise = torch.randn(T, D, generator=g) * (s.token_noise / math.sqrt(D))
        tokens = content + s.shared_scale * self.shared + s.position_scale * self.positions + noise
        n_high = int(round(s.high_norm_frac * (T - 1)))
        if n_high:
            where = 1 + torch.randperm(T - 1, generator=g)[:n_high]
            typical = tokens[1:].norm(dim=-1).median()
            # a constant direction (they resemble each other), a little local content and, with
            # high_norm_content, the image's global content (the CLS's, content[0]) scaled with the token
            tokens[where] = (self.outlier * (s.high_norm_scale * typical) + 0.1 * content[where]
                             + (s.high_norm_content * s.high_norm_scale) * content[0])
        # per-element RMS ~1 after scaling the typical token norm to sqrt(D)
        tokens = tokens * (math.sqrt(D) / math.sqrt(1 + s.shared_scale**2 + s.position_scale**2 + s.token_noise**2))
        caption = z + s.text_noise * torch.randn(c, generator=g)
        text = caption @ self.text_map / math.sqrt(c) + s.text_shared_scale * self.text_shared
        text = text * math.sqrt(self.Dt / (1 + s.text_shared_scale**2))
        return tokens, text

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self._sample(int(i)) for i in index]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


class TensorPairs:
    def __init__(self, tokens: torch.Tensor, text: torch.Tensor):
        self.tokens, self.text = tokens, text
        self.num_samples = tokens.shape[0]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens[index].float(), self.text[index].float()


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if suffix in (".pt", ".pth", ".bin"):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
            if not isinstance(obj, dict):
                raise ConfigError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
            return obj
        if suffix in (".npz", ".npy"):
            import numpy as np

            arrays = np.load(str(path), allow_pickle=False)
            if suffix == ".npy":
                raise ConfigError(f"{path}: a single .npy array cannot hold image and text; use .npz with "
                                  "image_tokens and text")
            return {k: torch.from_numpy(arrays[k]) for k in arrays.files}
    except ConfigError:
        raise
    except Exception as exc:  # corrupt, truncated, or a pickle payload refused by weights_only
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ConfigError(f"{path}: cannot read tensors ({first[:160]})") from None
    raise ConfigError(f"{path}: unsupported features file; expected .safetensors, .pt, or .npz")


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a features file (.safetensors, .pt with weights_only, .npz); ConfigError otherwise."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    return _read_tensors(path)


def load_features(cfg: AlignmentConfig, seed: int) -> tuple[TensorPairs, TensorPairs]:
    path = Path(cfg.dataset.features.path).expanduser()
    if not path.is_file():
        raise ConfigError(f"dataset.features.path: file not found: {path}")
    data = _read_tensors(path)
    for key in ("image_tokens", "text"):
        if key not in data:
            raise ConfigError(f"{path}: missing tensor '{key}' (found: {', '.join(sorted(data)) or 'none'})")
    T, D, Dt = cfg.vision_encoder.num_tokens, cfg.vision_encoder.hidden_dim, cfg.text_encoder.hidden_dim

    def check(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        for key in (f"{prefix}image_tokens", f"{prefix}text"):  # val_* come as a pair
            if key not in data:
                raise ConfigError(f"{path}: missing tensor '{key}' (found: {', '.join(sorted(data))})")
        tok, txt = data[f"{prefix}image_tokens"], data[f"{prefix}text"]
        if tok.dim() != 3 or tuple(tok.shape[1:]) != (T, D):
            raise ConfigError(
                f"{path}: '{prefix}image_tokens' has shape {tuple(tok.shape)}, expected (N, {T}, {D}) "
                f"(vision_encoder.num_tokens, vision_encoder.hidden_dim; change them with --set)"
            )
        if txt.dim() != 2 or txt.shape[1] != Dt or txt.shape[0] != tok.shape[0]:
            raise ConfigError(
                f"{path}: '{prefix}text' has shape {tuple(txt.shape)}, expected ({tok.shape[0]}, {Dt}) "
                f"(text_encoder.hidden_dim)"
            )
        if not (torch.isfinite(tok).all() and torch.isfinite(txt).all()):
            raise ConfigError(f"{path}: '{prefix}image_tokens'/'{prefix}text' contain NaN or Inf")
        return tok, txt

    tok, txt = check("")
    if "val_image_tokens" in data or "val_text" in data:
        vtok, vtxt = check("val_")
        return TensorPairs(tok, txt), TensorPairs(vtok, vtxt)
    n = tok.shape[0]
    n_val = max(1, int(round(n * cfg.dataset.features.val_fraction)))
    if n - n_val < cfg.dataset.batch_size:
        raise ConfigError(
            f"{path}: {n} samples leave {n - n_val} for training, fewer than "
            f"dataset.batch_size={cfg.dataset.batch_size}"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    tr, va = perm[n_val:], perm[:n_val]
    return TensorPairs(tok[tr], txt[tr]), TensorPairs(tok[va], txt[va])


def build_data(cfg: AlignmentConfig, seed: int) -> tuple[PairSource, PairSource]:
    """(train, val) sources for the config's `dataset.source`."""
    source = cfg.dataset.source
    if source == "synthetic":
        return SyntheticPairs(cfg, "train", seed), SyntheticPairs(cfg, "val", seed)
    if source == "features":
        return load_features(cfg, seed)
    if source == "images":
        if not cfg.dataset.features.path:
            raise ConfigError("dataset.source 'images': the images are not encoded yet; run through the diagnose CLI, "
                              "which encodes them once and caches the features")
        return load_features(cfg, seed)
    raise ConfigError(f"dataset.source '{source}': expected synthetic, features or images")
