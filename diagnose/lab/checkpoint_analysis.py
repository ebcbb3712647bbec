"""Static checkpoint analysis: per-tensor and per-layer statistics, learned latents/queries,
non-finite values, the change against an earlier checkpoint, and the match with a reference config.

Weights are only ever read as safetensors or with `diagnose.lab.checkpoint_files.load_state_dict` (torch with
`weights_only=True`): a pickle that references anything but tensors is refused, never executed.

The statistics are numpy (float64). A safetensors file is read with `safetensors.numpy`, so `diagnose
checkpoint model.safetensors` loads no torch; torch is imported for a torch file (.pt/.pth/.bin), for a
safetensors file holding a dtype numpy lacks (bfloat16, float8: read by torch, then widened to float32),
and for --config (the reference model, built on the meta device).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError
from ..core.rules import RunContext, run_rules
from ..core.rules.checkpoint import CheckpointAnalysis
from ..core.summary import DEFAULT_MAX_LOGIT_SCALE

# --- limits (the rules and their thresholds are in diagnose.core.rules.checkpoint) --------------------
# Rows of a latent matrix are compared for exact equality; more than this many rows are sampled
# for the pairwise cosine (O(L^2 D)); Perceiver-style models have 32-512 latents.
MAX_LATENT_ROWS = 1024
# Parameter names that are learned latents / queries (Perceiver, Q-Former, Flamingo resampler, ...).
LATENT_NAME = re.compile(r"(latent|quer(y|ies)|query_tokens|query_embed)", re.I)
# Last name components that belong to a module (weight of a Linear, running stats of a BatchNorm):
# such tensors are grouped under their module; any other name (latents, logit_scale) is its own layer.
MODULE_PARAM_NAMES = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked", "in_proj_weight",
                      "in_proj_bias", "weight_g", "weight_v", "weight_orig", "bias_k", "bias_v", "gamma", "beta"}
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth")
HF_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# exp(x) overflows float64 above ~709.78; a stored log-scale beyond this has no finite temperature.
EXP_OVERFLOW = 709.0


def layer_of(name: str) -> str:
    head, _, last = name.rpartition(".")
    return head if head and last in MODULE_PARAM_NAMES else name


def _clear_error(path: Path, exc: ConfigError) -> ConfigError:
    """One clear line: a refused pickle names the global it asked for; anything else is corrupt."""
    ctx = exc.__context__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(ctx) if ctx is not None else str(exc))
    if "Unsupported global" in text or "GLOBAL" in text:
        m = re.search(r"GLOBAL\s+([\w.]+)", text)
        what = f" references {m.group(1)}" if m else " contains objects other than tensors"
        return ConfigError(f"{path}: refused: the pickle{what}; loading it would run code. Read with "
                           "weights_only=True, "
                           "nothing was executed")
    if ctx is None:
        return exc
    m = re.search(r"(Unsupported operand \d+|invalid load key[^.\n]*|failed finding central directory|"
                  r"invalid header length|incomplete metadata[^\n]*|unexpected EOF|Invalid argument)", text)
    detail = m.group(1) if m else type(ctx).__name__
    return ConfigError(f"{path}: not a loadable checkpoint: corrupt, truncated, or not a safetensors/PyTorch file "
                       f"({detail})")


class State(dict):
    """{name: numpy array} with the dtype each tensor was stored in (`dtypes`: "bfloat16" stays "bfloat16"
    although its array is float32)."""

    def __init__(self, arrays: dict[str, np.ndarray], dtypes: dict[str, str] | None = None):
        super().__init__(arrays)
        self.dtypes = {k: (dtypes or {}).get(k) or str(v.dtype) for k, v in arrays.items()}


def _from_torch(state: dict) -> State:
    arrays, dtypes = {}, {}
    for k, t in state.items():
        t = t.detach().cpu()
        dtypes[k] = str(t.dtype).removeprefix("torch.")
        if t.is_floating_point() and t.element_size() < 4 and dtypes[k] != "float16":  # bfloat16, float8
            t = t.float()
        arrays[k] = t.numpy()
    return State(arrays, dtypes)


def _numpy_safetensors(path: Path) -> State | None:
    """The file read without torch; None when numpy cannot hold one of its dtypes (torch reads it then)."""
    try:
        from safetensors.numpy import load_file
    except ImportError:  # pragma: no cover - safetensors is a core dependency
        return None
    if not path.exists():
        raise ConfigError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; expected a .safetensors or .pt file")
    if path.stat().st_size == 0:
        raise ConfigError(f"{path}: checkpoint file is empty")
    try:
        return State(load_file(str(path)))
    except TypeError:  # "data type 'bfloat16' not understood"
        return None
    except Exception as exc:  # corrupt or truncated: the same line as a torch read (load_state_dict)
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise ConfigError(f"{path}: cannot load checkpoint safely ({first[:200]})") from None


def _load_file(path: Path) -> State:
    try:
        if path.suffix == ".safetensors":
            state = _numpy_safetensors(path)
            if state is not None:
                return state
        from .checkpoint_files import load_state_dict  # torch: a torch file, or a dtype numpy lacks

        return _from_torch(load_state_dict(path))
    except ConfigError as exc:
        raise _clear_error(path, exc) from None


def read_metadata(path: Path) -> dict[str, str]:
    if path.suffix != ".safetensors":
        return {}
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as fh:
            return dict(fh.metadata() or {})
    except Exception:  # metadata is optional; the weights were already read or refused
        return {}


def load_checkpoint(path: Path) -> tuple[State, list[Path], dict[str, str]]:
    """State dict from a file, a Hugging Face model directory (model.safetensors / pytorch_model.bin,
    sharded or not), or a training checkpoint wrapping `state_dict` / `model`."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: checkpoint not found")
    if path.is_dir():
        for index in HF_INDEX_FILES:
            if (path / index).is_file():
                try:
                    weight_map = json.loads((path / index).read_text())["weight_map"]
                except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
                    raise ConfigError(f"{path / index}: not a valid shard index (expected a 'weight_map')") from None
                if not isinstance(weight_map,
                                  dict) or not weight_map or not all(isinstance(f, str) for f in weight_map.values()):
                    raise ConfigError(f"{path / index}: 'weight_map' must be a non-empty mapping of tensor names to "
                                      "shard files")
                files = [path / f for f in dict.fromkeys(weight_map.values())]
                outside = [f for f in files if path.resolve() not in f.resolve().parents]
                if outside:
                    raise ConfigError(f"{path / index}: shard '{outside[0].name}' lies outside {path}")
                state = State({})
                for f in files:
                    shard = _load_file(f)
                    state.update(shard)
                    state.dtypes.update(shard.dtypes)
                return state, files, read_metadata(files[0])
        for name in HF_WEIGHT_FILES:
            if (path / name).is_file():
                return _load_file(path / name), [path / name], read_metadata(path / name)
        raise ConfigError(f"{path}: directory has no model weights (expected one of "
                          f"{', '.join(HF_WEIGHT_FILES + HF_INDEX_FILES)})")
    return _load_file(path), [path], read_metadata(path)


# --- statistics ----------------------------------------------------------------------------------


def _f(x: float, digits: int = 6) -> float | None:
    x = float(x)
    return float(f"{x:.{digits}g}") if math.isfinite(x) else (None if math.isnan(x) else x)


def _floating(t: np.ndarray) -> bool:
    return np.issubdtype(t.dtype, np.floating) or np.issubdtype(t.dtype, np.complexfloating)


def _f64(t: np.ndarray) -> np.ndarray:
    return np.asarray(t.real if np.iscomplexobj(t) else t, dtype=np.float64)


def tensor_stats(name: str, t: np.ndarray, dtype: str | None = None) -> dict:
    row = {"name": name, "layer": layer_of(name), "shape": list(t.shape), "dtype": dtype or str(t.dtype),
           "numel": int(t.size)}
    if not _floating(t) or t.size == 0:
        return row
    x = _f64(t).reshape(-1)
    finite = np.isfinite(x)
    nan, inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
    xf = x[finite]
    if xf.size:
        row.update(mean=_f(xf.mean()), std=_f(xf.std()), rms=_f(np.sqrt(np.square(xf).mean())),
                   absmax=_f(np.abs(xf).max()), zero_frac=_f((xf == 0).mean(), 4), norm=_f(np.linalg.norm(xf)))
    row.update(nan=nan, inf=inf)
    return row


def layer_stats(tensors: list[dict]) -> list[dict]:
    layers: dict[str, dict] = {}
    for t in tensors:
        if "norm" not in t and "nan" not in t:
            continue
        d = layers.setdefault(t["layer"], {"layer": t["layer"], "tensors": 0, "numel": 0, "sq": 0.0, "nonfinite": 0})
        d["tensors"] += 1
        d["numel"] += t["numel"]
        d["sq"] += (t.get("norm") or 0.0) ** 2
        d["nonfinite"] += t.get("nan", 0) + t.get("inf", 0)
    out = []
    for d in layers.values():
        sq = d.pop("sq")
        d["norm"] = _f(math.sqrt(sq))
        d["rms"] = _f(math.sqrt(sq / d["numel"])) if d["numel"] else None
        out.append(d)
    return out


def latent_stats(name: str, t: np.ndarray, init: np.ndarray | None = None) -> dict:
    x = _f64(t)
    while x.ndim > 2 and x.shape[0] == 1:
        x = x[0]
    rows = x.reshape(-1, x.shape[-1])
    n = rows.shape[0]
    uniq = np.unique(rows, axis=0).shape[0]
    s = rows[:MAX_LATENT_ROWS]
    norms = np.linalg.norm(s, axis=1)
    d = {"name": name, "shape": list(t.shape), "rows": n, "dim": int(rows.shape[1]),
         "rms": _f(np.sqrt(np.square(rows).mean())),
         "std": _f(rows.std()), "mean": _f(rows.mean()), "row_norm_mean": _f(norms.mean()),
         "between_latent_std": _f(rows.std(axis=0).mean()) if n > 1 else None,
         "unique_rows": int(uniq), "identical_rows": int(n - uniq),
         "zero_rows": int((np.abs(rows).sum(axis=1) == 0).sum())}
    if s.shape[0] > 1 and bool((norms > 0).all()):
        u = s / norms[:, None]
        cos = u @ u.T
        off = cos[~np.eye(s.shape[0], dtype=bool)]
        d.update(cosine_mean=_f(off.mean(), 4), cosine_max=_f(off.max(), 4))
    if init is not None and init.shape == t.shape:
        x0 = _f64(init)
        ref = np.linalg.norm(x0)
        d["drift"] = _f(np.linalg.norm(x - x0.reshape(x.shape)) / ref) if ref > 0 else None
    return d


def relative_change(state: dict[str, np.ndarray], base: dict[str, np.ndarray]) -> dict:
    common = [k for k in state if k in base and state[k].shape == base[k].shape and _floating(state[k])]
    if not common:
        raise ConfigError("--against: the two checkpoints share no tensor of the same name and shape")
    layers: dict[str, list[float]] = {}
    for k in common:
        a, b = _f64(state[k]), _f64(base[k])
        acc = layers.setdefault(layer_of(k), [0.0, 0.0, 0])
        acc[0] += float(np.square(a - b).sum())
        acc[1] += float(np.square(b).sum())
        acc[2] += a.size
    rows = []
    for layer, (diff, ref, numel) in layers.items():
        rows.append({"layer": layer, "numel": numel, "abs_change": _f(math.sqrt(diff)), "base_norm": _f(math.sqrt(ref)),
                     "rel_change": _f(math.sqrt(diff) / math.sqrt(ref)) if ref > 0 else None})
    rows.sort(key=lambda r: (r["rel_change"] is None, r["rel_change"] if r["rel_change"] is not None else 0.0))
    return {"layers": rows, "missing_in_base": sorted(set(state) - set(base)),
            "missing_in_checkpoint": sorted(set(base) - set(state)),
            "shape_differs": sorted(k for k in state if k in base and state[k].shape != base[k].shape)}


def config_match(state: dict[str, np.ndarray], config: str, sets: list[str], scale: str) -> dict:
    """Keys and shapes against the reference model of `config` (built on the meta device: no memory)."""
    import torch

    from reference_models import SCALES, apply_scale, build_model, load_config

    def expected(sc: str) -> dict[str, tuple]:
        cfg = apply_scale(load_config(config, sets), sc)
        with torch.device("meta"):
            model = build_model(cfg)
        return cfg.name, {k: tuple(v.shape) for k, v in model.state_dict().items()}

    name, want = expected(scale)
    have = {k: tuple(v.shape) for k, v in state.items()}
    res = {"config": name, "scale": scale, "expected": len(want), "found": len(have),
           "missing": sorted(set(want) - set(have)), "unexpected": sorted(set(have) - set(want)),
           "shape_mismatch": [{"name": k, "checkpoint": list(have[k]), "config": list(want[k])}
                              for k in want if k in have and have[k] != want[k]]}
    res["matches"] = not (res["missing"] or res["unexpected"] or res["shape_mismatch"])
    if not res["matches"]:
        res["matching_scales"] = [sc for sc in SCALES if sc != scale and expected(sc)[1] == have]
    return res


# --- findings ------------------------------------------------------------------------------------


def analyse_checkpoint(path: Path, against: Path | None = None, config: str | None = None,
                       sets: list[str] | None = None, scale: str = "full") -> CheckpointAnalysis:
    state, files, meta = load_checkpoint(path)
    if not state:
        raise ConfigError(f"{path}: checkpoint holds no tensors")
    base = load_checkpoint(against)[0] if against is not None else None
    tensors = [tensor_stats(k, v, state.dtypes.get(k)) for k, v in state.items()]
    a = CheckpointAnalysis(Path(path).name, [str(f) for f in files], meta, tensors, layer_stats(tensors))
    for k, v in state.items():
        last = k.rpartition(".")[2]
        if (_floating(v) and v.ndim >= 2 and v.size and last not in MODULE_PARAM_NAMES
                and LATENT_NAME.search(last)):
            a.latents.append(latent_stats(k, v, base.get(k) if base else None))
        if last == "logit_scale" and _floating(v) and v.size == 1:
            value = float(_f64(v).reshape(()))
            a.logit_scale = {"name": k, "value": value, "exp": _f(math.exp(value)) if value < EXP_OVERFLOW else None}
    if base is not None:
        a.against = relative_change(state, base)
        a.against["path"] = str(against)
    cap = DEFAULT_MAX_LOGIT_SCALE
    if config is not None:
        a.config = config_match(state, config, list(sets or []), scale)
        from reference_models import load_config

        cap = load_config(config, list(sets or [])).losses.max_logit_scale
    a.findings = run_rules(a, RunContext(a.name, max_logit_scale=cap), kind="checkpoint")
    return a
