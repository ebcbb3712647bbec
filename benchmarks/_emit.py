"""What the suite benchmarks (faults.py, seeds.py) share: JSON-safe numbers, the machine, the output."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path


def finite(x: float | None, nd: int = 4) -> float | None:
    """JSON has no NaN: a diverged run's value is reported as null."""
    return round(float(x), nd) if x is not None and math.isfinite(float(x)) else None


def machine() -> dict:
    import torch

    return {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__}


def emit(result: dict, out: Path | None) -> dict:
    """Print the result as JSON (and write it to `out`); returns it."""
    text = json.dumps(result, indent=2)
    if out:
        out.write_text(text + "\n")
    print(text)
    return result
