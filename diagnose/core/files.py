"""File writing of the tool, torch-free: atomic text/JSON/bytes writes, the published report pair
(summary.json + report.md), figures as PNG, and the umask that temporary files must honour."""

from __future__ import annotations

import json
import os
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

from .errors import OutputError


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
    """A matplotlib figure as PNG bytes; the figure is closed (matplotlib is imported here, by the commands
    that draw, not by every user of these writers)."""
    import matplotlib.pyplot as plt

    buf = BytesIO()
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
            raise OutputError(f"GITHUB_STEP_SUMMARY={step_summary}: cannot append "
                              f"({exc.strerror or exc.__class__.__name__})") from None
