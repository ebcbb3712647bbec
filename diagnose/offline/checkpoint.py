"""Static checkpoint analysis: per-tensor and per-layer statistics, learned latents/queries,
non-finite values, the change against an earlier checkpoint, and the match with a reference config.

Weights are only ever read with `diagnose.io.load_state_dict` (safetensors, or torch with
`weights_only=True`): a pickle that references anything but tensors is refused, never executed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from reference_models import SCALES, apply_scale, build_model, load_config
from reference_models.config import ConfigError

from ..findings import Finding, sort_findings
from ..io import load_state_dict
from ..rules import CLAMP_REL, LATENT_COSINE, LOW_LOGIT_SCALE

# --- thresholds ----------------------------------------------------------------------------------
# How many of the least-changed layers a report names (enough to see a pattern, short enough to read).
LEAST_CHANGED_SHOWN = 3
# A layer that moved less than 1% of the median layer's relative change between two checkpoints is
# named as barely trained: healthy Adam runs differ between layer types by ~sqrt(fan_in) (LayerNorm
# vs a 1024-wide Linear: ~30x), so 100x below the median is beyond what the optimiser alone explains.
BARELY_CHANGED_OF_MEDIAN = 1e-2
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
        return ConfigError(f"{path}: refused: the pickle{what}; loading it would run code. Read with weights_only=True, "
                           "nothing was executed")
    if ctx is None:
        return exc
    m = re.search(r"(Unsupported operand \d+|invalid load key[^.\n]*|failed finding central directory|"
                  r"invalid header length|incomplete metadata[^\n]*|unexpected EOF|Invalid argument)", text)
    detail = m.group(1) if m else type(ctx).__name__
    return ConfigError(f"{path}: not a loadable checkpoint: corrupt, truncated, or not a safetensors/PyTorch file ({detail})")


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_state_dict(path)
    except ConfigError as exc:
        raise _clear_error(path, exc) from None


def read_metadata(path: Path) -> dict[str, str]:
    if path.suffix != ".safetensors":
        return {}
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception:  # metadata is optional; the weights were already read or refused
        return {}


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], list[Path], dict[str, str]]:
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
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ConfigError(f"{path / index}: not a valid shard index (expected a 'weight_map')") from None
                files = [path / f for f in dict.fromkeys(weight_map.values())]
                state: dict[str, torch.Tensor] = {}
                for f in files:
                    state.update(_load_file(f))
                return state, files, read_metadata(files[0])
        for name in HF_WEIGHT_FILES:
            if (path / name).is_file():
                return _load_file(path / name), [path / name], read_metadata(path / name)
        raise ConfigError(f"{path}: directory has no model weights (expected one of {', '.join(HF_WEIGHT_FILES + HF_INDEX_FILES)})")
    return _load_file(path), [path], read_metadata(path)


# --- statistics ----------------------------------------------------------------------------------


def _f(x: float, digits: int = 6) -> float | None:
    x = float(x)
    return float(f"{x:.{digits}g}") if math.isfinite(x) else (None if math.isnan(x) else x)


def tensor_stats(name: str, t: torch.Tensor) -> dict:
    row = {"name": name, "layer": layer_of(name), "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
           "numel": t.numel()}
    if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
        return row
    x = t.detach().to(torch.float64).reshape(-1)
    finite = torch.isfinite(x)
    nan, inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
    xf = x[finite]
    if xf.numel():
        row.update(mean=_f(xf.mean()), std=_f(xf.std(unbiased=False)), rms=_f(xf.pow(2).mean().sqrt()),
                   absmax=_f(xf.abs().max()), zero_frac=_f((xf == 0).double().mean(), 4), norm=_f(xf.norm()))
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


def latent_stats(name: str, t: torch.Tensor, init: torch.Tensor | None = None) -> dict:
    x = t.detach().to(torch.float64)
    while x.dim() > 2 and x.shape[0] == 1:
        x = x[0]
    rows = x.reshape(-1, x.shape[-1])
    n = rows.shape[0]
    uniq = torch.unique(rows, dim=0).shape[0]
    s = rows[:MAX_LATENT_ROWS]
    norms = s.norm(dim=1)
    d = {"name": name, "shape": list(t.shape), "rows": n, "dim": int(rows.shape[1]), "rms": _f(rows.pow(2).mean().sqrt()),
         "std": _f(rows.std(unbiased=False)), "mean": _f(rows.mean()), "row_norm_mean": _f(norms.mean()),
         "between_latent_std": _f(rows.std(dim=0, unbiased=False).mean()) if n > 1 else None,
         "unique_rows": int(uniq), "identical_rows": int(n - uniq), "zero_rows": int((rows.abs().sum(dim=1) == 0).sum())}
    if s.shape[0] > 1 and bool((norms > 0).all()):
        u = s / norms[:, None]
        cos = u @ u.T
        off = cos[~torch.eye(s.shape[0], dtype=torch.bool)]
        d.update(cosine_mean=_f(off.mean(), 4), cosine_max=_f(off.max(), 4))
    if init is not None and init.shape == t.shape:
        x0 = init.detach().to(torch.float64)
        d["drift"] = _f((x - x0.reshape(x.shape)).norm() / x0.norm()) if x0.norm() > 0 else None
    return d


def relative_change(state: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict:
    common = [k for k in state if k in base and state[k].shape == base[k].shape and state[k].is_floating_point()]
    if not common:
        raise ConfigError("--against: the two checkpoints share no tensor of the same name and shape")
    layers: dict[str, list[float]] = {}
    for k in common:
        a, b = state[k].detach().to(torch.float64), base[k].detach().to(torch.float64)
        acc = layers.setdefault(layer_of(k), [0.0, 0.0, 0])
        acc[0] += float((a - b).pow(2).sum())
        acc[1] += float(b.pow(2).sum())
        acc[2] += a.numel()
    rows = []
    for layer, (diff, ref, numel) in layers.items():
        rows.append({"layer": layer, "numel": numel, "abs_change": _f(math.sqrt(diff)), "base_norm": _f(math.sqrt(ref)),
                     "rel_change": _f(math.sqrt(diff) / math.sqrt(ref)) if ref > 0 else None})
    rows.sort(key=lambda r: (r["rel_change"] is None, r["rel_change"] if r["rel_change"] is not None else 0.0))
    return {"layers": rows, "missing_in_base": sorted(set(state) - set(base)), "missing_in_checkpoint": sorted(set(base) - set(state)),
            "shape_differs": sorted(k for k in state if k in base and state[k].shape != base[k].shape)}


def config_match(state: dict[str, torch.Tensor], config: str, sets: list[str], scale: str) -> dict:
    """Keys and shapes against the reference model of `config` (built on the meta device: no memory)."""
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


@dataclass
class CheckpointAnalysis:
    name: str
    files: list[str]
    metadata: dict[str, str]
    tensors: list[dict]
    layers: list[dict]
    latents: list[dict] = field(default_factory=list)
    logit_scale: dict | None = None
    against: dict | None = None
    config: dict | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def parameters(self) -> int:
        return sum(t["numel"] for t in self.tensors)


def _findings(a: CheckpointAnalysis) -> list[Finding]:
    out, run = [], a.name
    bad = [t for t in a.tensors if t.get("nan", 0) or t.get("inf", 0)]
    if bad:
        out.append(Finding(
            "nonfinite_weights", "error", run,
            f"{len(bad)} tensor(s) hold NaN or Inf values: {', '.join(t['name'] for t in bad[:5])}"
            f"{' ...' if len(bad) > 5 else ''}. Any forward pass through them produces NaN.",
            {"tensors": [{k: t[k] for k in ("name", "shape", "nan", "inf", "numel")} for t in bad[:20]]},
            "Find the step where they appeared (lower the lr, enable grad clipping, check for log(0) or division by 0).",
            bad[0]["name"]))
    for lat in a.latents:
        if lat["rows"] > 1 and lat["unique_rows"] == 1:
            out.append(Finding(
                "latents_symmetric", "error", run,
                f"all {lat['rows']} rows of {lat['name']} are identical{' (all zero)' if lat['zero_rows'] == lat['rows'] else ''}: every "
                "latent computes the same thing and gets the same gradient, so the symmetry never breaks.",
                {k: lat[k] for k in ("shape", "rms", "unique_rows", "identical_rows", "zero_rows")},
                "Initialise the latents with random values (e.g. normal std 0.02), not a constant.", lat["name"]))
        elif lat["identical_rows"]:
            out.append(Finding(
                "latents_duplicate_rows", "warning", run,
                f"{lat['identical_rows']} of the {lat['rows']} rows of {lat['name']} duplicate another row: duplicated "
                "latents stay identical under training.",
                {k: lat[k] for k in ("shape", "unique_rows", "identical_rows")},
                "Check the latent initialisation (a repeat/expand of one vector?).", lat["name"]))
        elif lat.get("cosine_mean") is not None and lat["cosine_mean"] > LATENT_COSINE:
            out.append(Finding(
                "latents_similar", "warning", run,
                f"the rows of {lat['name']} are near copies: mean pairwise cosine {lat['cosine_mean']:.3f}.",
                {k: lat.get(k) for k in ("shape", "cosine_mean", "cosine_max", "rms")},
                "Check the latent init and whether the latents receive distinct gradients.", lat["name"]))
        desc = (f"{lat['name']}: {lat['rows']} latents of width {lat['dim']}, rms {lat['rms']:.4g}, std {lat['std']:.4g}, "
                f"mean row norm {lat['row_norm_mean']:.4g}")
        if lat.get("cosine_mean") is not None:
            desc += f", pairwise cosine mean {lat['cosine_mean']:.3f} (max {lat['cosine_max']:.3f})"
        desc += f", {lat['identical_rows']} identical rows"
        if lat.get("drift") is not None:
            desc += f"; moved {lat['drift']:.3g} of their norm since the --against checkpoint"
        if lat["std"] and abs(lat["std"] / 0.02 - 1) < 0.1 and lat.get("drift") in (None, 0.0):
            desc += (". The scale matches normal(std=0.02), the effective init of the seed's randn-then-normal_ code; "
                     "whether it matters depends on a normalisation before the attention (a pre-norm rescales it away)")
        out.append(Finding("latents", "info", run, desc + ".", lat, "", lat["name"]))
    if a.logit_scale is not None:
        ls = a.logit_scale
        scale = ls["exp"]
        if scale is not None and abs(scale / 100.0 - 1) <= CLAMP_REL:
            out.append(Finding(
                "logit_scale_at_clamp", "warning", run,
                f"{ls['name']} = {ls['value']:.4f} -> exp = {scale:.2f}, at open_clip's clamp of 100: the temperature "
                "is pinned, often a sign the optimiser pushes logits apart to fit noise.",
                ls, "Check the lr of the temperature and the loss curve.", ls["name"]))
        elif scale is not None and scale < LOW_LOGIT_SCALE:
            out.append(Finding(
                "logit_scale_low", "warning", run,
                f"{ls['name']} = {ls['value']:.4f} -> exp = {scale:.3f}: cosine logits span at most ±{scale:.2f}, too "
                "narrow for a confident softmax; the contrastive loss cannot go far below ln(B).",
                ls, "Check the temperature init (open_clip: ln(1/0.07)) and its lr.", ls["name"]))
    if a.against is not None:
        layers = [r for r in a.against["layers"] if r["rel_change"] is not None]
        if layers and all(r["abs_change"] == 0 for r in a.against["layers"]):
            out.append(Finding("checkpoints_identical", "warning", run,
                               "the two checkpoints hold identical values in every shared tensor: nothing was trained between them.",
                               {"layers": len(a.against["layers"])}, "Check that the optimizer steps and that the right files were saved."))
        elif layers:
            med = sorted(r["rel_change"] for r in layers)[len(layers) // 2]
            least = layers[:LEAST_CHANGED_SHOWN]
            out.append(Finding(
                "layers_changed_least", "info", run,
                "layers that changed least (‖θ−θ₀‖/‖θ₀‖): "
                + ", ".join(f"{r['layer']} {r['rel_change']:.3g}" for r in least)
                + f"; median layer {med:.3g}, largest {layers[-1]['layer']} {layers[-1]['rel_change']:.3g}.",
                {"least": least, "median_rel_change": med, "most": layers[-1]}, "", least[0]["layer"]))
            frozen = [r for r in layers if r["abs_change"] == 0]
            if frozen:
                out.append(Finding(
                    "layers_unchanged", "warning", run,
                    f"{len(frozen)} layer(s) are bit-identical to the --against checkpoint while others changed: "
                    + ", ".join(r["layer"] for r in frozen[:8]) + (" ..." if len(frozen) > 8 else "")
                    + ". They never learned: frozen, missing from the optimizer, or no gradient reaches them.",
                    {"layers": [r["layer"] for r in frozen], "median_rel_change": med},
                    "Check requires_grad and the optimizer's param groups for these layers.", frozen[0]["layer"]))
            # scalars (a temperature, a gate) are left out: their relative change depends on their value
            barely = [r for r in layers if r["numel"] > 1 and 0 < r["rel_change"] < BARELY_CHANGED_OF_MEDIAN * med]
            if barely:
                out.append(Finding(
                    "layers_barely_changed", "warning", run,
                    f"{len(barely)} layer(s) moved less than {BARELY_CHANGED_OF_MEDIAN:g} x the median layer's relative change "
                    f"({med:.3g}): " + ", ".join(f"{r['layer']} {r['rel_change']:.3g}" for r in barely[:8]) + ".",
                    {"layers": barely[:20], "median_rel_change": med, "threshold_of_median": BARELY_CHANGED_OF_MEDIAN},
                    "Check their gradient norms with `diagnose gradflow`.", barely[0]["layer"]))
        differ = a.against["missing_in_base"] + a.against["missing_in_checkpoint"] + a.against["shape_differs"]
        if differ:
            out.append(Finding("against_keys_differ", "warning", run,
                               f"{len(differ)} tensor(s) are not comparable with the --against checkpoint (missing on one side "
                               f"or another shape): {', '.join(differ[:5])}{' ...' if len(differ) > 5 else ''}.",
                               {k: a.against[k][:20] for k in ("missing_in_base", "missing_in_checkpoint", "shape_differs")}))
    if a.config is not None:
        c = a.config
        if c["matches"]:
            out.append(Finding("config_match", "info", run,
                               f"all {c['expected']} tensors match the reference model of {c['config']} at scale {c['scale']} "
                               "(names and shapes).", {k: c[k] for k in ("config", "scale", "expected", "found")}))
        else:
            parts = []
            if c["missing"]:
                parts.append(f"{len(c['missing'])} missing ({', '.join(c['missing'][:4])}{' ...' if len(c['missing']) > 4 else ''})")
            if c["unexpected"]:
                parts.append(f"{len(c['unexpected'])} unexpected ({', '.join(c['unexpected'][:4])}{' ...' if len(c['unexpected']) > 4 else ''})")
            if c["shape_mismatch"]:
                s0 = c["shape_mismatch"][0]
                parts.append(f"{len(c['shape_mismatch'])} with another shape (e.g. {s0['name']} {tuple(s0['checkpoint'])} vs {tuple(s0['config'])})")
            hint = f" It matches scale {', '.join(c['matching_scales'])}: pass --scale {c['matching_scales'][0]}." if c.get("matching_scales") else ""
            out.append(Finding("config_mismatch", "error", run,
                               f"the checkpoint does not match the reference model of {c['config']} at scale {c['scale']}: "
                               + "; ".join(parts) + "." + hint,
                               {k: (c[k][:20] if isinstance(c[k], list) else c[k]) for k in c},
                               "Check the config (alias, --set overrides, --scale) the checkpoint was trained with."))
    return sort_findings(out)


def analyse_checkpoint(path: Path, against: Path | None = None, config: str | None = None,
                       sets: list[str] | None = None, scale: str = "full") -> CheckpointAnalysis:
    state, files, meta = load_checkpoint(path)
    if not state:
        raise ConfigError(f"{path}: checkpoint holds no tensors")
    base = load_checkpoint(against)[0] if against is not None else None
    tensors = [tensor_stats(k, v) for k, v in state.items()]
    a = CheckpointAnalysis(Path(path).name, [str(f) for f in files], meta, tensors, layer_stats(tensors))
    for k, v in state.items():
        last = k.rpartition(".")[2]
        if v.is_floating_point() and v.dim() >= 2 and last not in MODULE_PARAM_NAMES and LATENT_NAME.search(last):
            a.latents.append(latent_stats(k, v, base.get(k) if base else None))
        if last == "logit_scale" and v.is_floating_point() and v.numel() == 1:
            value = float(v.reshape(()))
            a.logit_scale = {"name": k, "value": value, "exp": _f(math.exp(value)) if value < 700 else None}
    if base is not None:
        a.against = relative_change(state, base)
        a.against["path"] = str(against)
    if config is not None:
        a.config = config_match(state, config, list(sets or []), scale)
    a.findings = _findings(a)
    return a
