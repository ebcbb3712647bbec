"""Encode an `images` source once with the frozen local models and cache the features on disk.

The cache file name carries `reference_models.images.cache_key` (models, image files, captions,
preprocessing), so a changed input is encoded afresh; the file is written atomically, so an
interrupted or failed encoding leaves nothing behind.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from safetensors import safe_open
from safetensors.torch import save

from reference_models import AlignmentConfig
from reference_models.images import cache_key, encode, read_captions

from ..core.errors import ConfigError
from ..core.files import atomic_write_bytes

# how the encoding reports, given by the caller (the CLI passes its console): a line of text, and a
# progress bar started with (description, total) whose ticker has `advance(n)`
Say = Callable[[str], None]
StartProgress = Callable[[str, int], AbstractContextManager[Any]]
SILENT_TICKER = SimpleNamespace(advance=lambda n=1, **fields: None)


def _check_writable(cache_dir: Path) -> None:
    """The cache can be written (checked with access(2), creating nothing) before minutes of encoding."""
    if cache_dir.exists() and not cache_dir.is_dir():
        raise ConfigError(f"dataset.images.cache_dir {cache_dir}: exists and is not a directory")
    probe = cache_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"dataset.images.cache_dir {cache_dir}: {probe} is a file, expected a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"dataset.images.cache_dir {cache_dir}: cannot write in {probe} "
                          "(permission denied or read-only file system)")


def prepare_images(cfg: AlignmentConfig, say: Say | None = None, progress: StartProgress | None = None) -> Path:
    """Make sure the features exist; point `cfg.dataset.features.path` at them and set the input dims.
    `say` and `progress` report the encoding (silent without them)."""
    say = say or (lambda text: None)
    ic = cfg.dataset.images
    pairs = read_captions(cfg)
    cache_dir = Path(ic.cache_dir).expanduser() if ic.cache_dir else Path(ic.root).expanduser() / ".diagnose-cache"
    path = cache_dir / f"features-{cache_key(cfg, pairs)}.safetensors"
    if path.is_file():
        say(f"using cached features {path}")
    else:
        _check_writable(cache_dir)  # before minutes of encoding, not after
        bar = progress(f"encode {len(pairs)} images", len(pairs)) if progress else nullcontext(SILENT_TICKER)
        with bar as ticker:
            feats = encode(cfg, pairs, ticker.advance)
        atomic_write_bytes(path, save(feats, metadata={"images": str(len(pairs)), "vision_model": ic.vision_model,
                                                        "text_model": ic.text_model}))
        say(f"encoded {len(pairs)} image/caption pairs -> {path}")
    with safe_open(str(path), framework="pt") as fh:
        tok_shape, txt_shape = fh.get_slice("image_tokens").get_shape(), fh.get_slice("text").get_shape()
    # the frozen encoders decide the input widths, whatever --scale did to the config
    cfg.dataset.features.path = str(path)
    cfg.vision_encoder.num_tokens, cfg.vision_encoder.hidden_dim = int(tok_shape[1]), int(tok_shape[2])
    cfg.text_encoder.hidden_dim = int(txt_shape[1])
    return path
