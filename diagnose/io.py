"""All file writing of the tool: atomic text/JSON writes and checkpoints (safetensors + config)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from reference_models import AlignmentConfig, ConfigError, dump_config


class OutputError(ConfigError):
    """An output could not be written (full disk, read-only, not a directory): one line, exit 2."""


def umask() -> int:
    """The process umask (read by setting and restoring it: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: Path, directory: bool = False) -> None:
    """mkstemp/mkdtemp create 0600/0700 whatever the umask; give `path` the mode open() would."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file.

    Any OSError (full disk, read-only file system, a file where a directory should be) becomes an
    `OutputError` naming the file; the temporary file is removed.
    """
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        honour_umask(Path(tmp))
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc.__class__.__name__})") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def publish(out: Path, summary: dict, markdown: str) -> None:
    """summary.json and report.md, atomically; the markdown is appended to GITHUB_STEP_SUMMARY when set."""
    write_json(out / "summary.json", summary)
    atomic_write_text(out / "report.md", markdown)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        try:
            with open(step_summary, "a", encoding="utf-8") as fh:
                fh.write(markdown + "\n")
        except OSError as exc:
            raise OutputError(f"GITHUB_STEP_SUMMARY={step_summary}: cannot append ({exc.strerror or exc.__class__.__name__})") from None


def save_checkpoint(path: Path, model: torch.nn.Module, cfg: AlignmentConfig, metadata: dict[str, str] | None = None) -> None:
    """safetensors weights plus the resolved config beside them (`<stem>.yaml`)."""
    from safetensors.torch import save

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
            from safetensors.torch import load_file

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
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
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
