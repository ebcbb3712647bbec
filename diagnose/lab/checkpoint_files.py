"""Checkpoint files: safetensors weights with the resolved config beside them, and weights read back
without ever unpickling arbitrary objects."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from reference_models import AlignmentConfig, dump_config

from ..core.errors import ConfigError
from ..core.files import atomic_write_bytes, atomic_write_text


def save_checkpoint(path: Path, model: torch.nn.Module, cfg: AlignmentConfig,
                    metadata: dict[str, str] | None = None) -> None:
    """safetensors weights plus the resolved config beside them (`<stem>.yaml`)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"config_name": cfg.name, "scale": cfg.scale, **(metadata or {})}
    atomic_write_bytes(path, canonical_safetensors(save(state, metadata=meta)))
    atomic_write_text(path.with_suffix(".yaml"), dump_config(cfg))


def canonical_safetensors(blob: bytes) -> bytes:
    """The same file with its JSON header in sorted key order, so equal weights hash equal.

    safetensors serialises `__metadata__` from a hash map whose order changes from process to
    process; the tensor data and offsets are untouched (offsets count from the end of the header).
    """
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to 8-byte alignment with spaces
    return len(text).to_bytes(8, "little") + text + blob[8 + n :]


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read weights without ever unpickling arbitrary objects.

    safetensors, or torch files with `weights_only=True`; a training checkpoint that wraps the
    weights under `state_dict` / `model` is unwrapped.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; expected a .safetensors or .pt file")
    if path.stat().st_size == 0:
        raise ConfigError(f"{path}: checkpoint file is empty")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise ConfigError(f"{path}: cannot load checkpoint safely ({first[:200]})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: expected a mapping of parameter names to tensors")
    return state


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load; mismatched keys or shapes are a ConfigError listing them."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:6])}{' ...' if len(unexpected) > 6 else ''}")
    if shapes:
        problems.append(f"shape mismatch {'; '.join(shapes[:4])}{' ...' if len(shapes) > 4 else ''}")
    if problems:
        raise ConfigError(f"{source}: checkpoint does not match the model: {' | '.join(problems)}")
    model.load_state_dict(state)
