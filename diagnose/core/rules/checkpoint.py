"""Rules on a checkpoint (`diagnose checkpoint`): NaN/Inf weights, latents, the temperature, the change
against an earlier checkpoint, the match with a reference config. They read a `CheckpointAnalysis`
(built by `diagnose.lab.checkpoint_analysis`), never the weights themselves."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..findings import Finding
from .attention import LATENT_COSINE
from .base import Emit, Rule, RunContext
from .loss import temperature_findings

# How many of the least-changed layers a report names (enough to see a pattern, short enough to read).
LEAST_CHANGED_SHOWN = 3
# A layer that moved less than 1% of the median layer's relative change between two checkpoints is
# named as barely trained: healthy Adam runs differ between layer types by ~sqrt(fan_in) (LayerNorm
# vs a 1024-wide Linear: ~30x), so 100x below the median is beyond what the optimiser alone explains.
BARELY_CHANGED_OF_MEDIAN = 1e-2
# The seed's latent init (`randn` overwritten by `normal_(std=0.02)`): a latent std within 10% of 0.02
# matches it (the std of 64x1024 draws is within 0.5% of its value; 10% leaves room for training drift).
SEED_LATENT_STD, SEED_STD_MATCH_REL = 0.02, 0.1


# --- what the rules read: statistics of a checkpoint, no tensors -----------------------------------


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


class CheckpointRule(Rule):
    kind = "checkpoint"
    topic = "checkpoint"

    def check(self, a: CheckpointAnalysis, ctx: RunContext) -> list[Finding]:
        raise NotImplementedError


class NonfiniteWeights(CheckpointRule):
    emits = (Emit("nonfinite_weights", ("error",), "nonfinite_divergence", 1),)

    def check(self, a, ctx):
        bad = [t for t in a.tensors if t.get("nan", 0) or t.get("inf", 0)]
        if not bad:
            return []
        return [Finding(
            "nonfinite_weights", "error", ctx.name,
            f"{len(bad)} tensor(s) hold NaN or Inf values: {', '.join(t['name'] for t in bad[:5])}"
            f"{' ...' if len(bad) > 5 else ''}. Any forward pass through them produces NaN.",
            {"tensors": [{k: t[k] for k in ("name", "shape", "nan", "inf", "numel")} for t in bad[:20]]},
            "Find the step where they appeared (lower the lr, enable grad clipping, check for log(0) or "
            "division by 0).",
            bad[0]["name"])]


def _g(x) -> str:
    return "nan" if x is None else f"{x:.4g}"  # statistics of non-finite latents are stored as None


def _describe(lat: dict) -> str:
    desc = (f"{lat['name']}: {lat['rows']} latents of width {lat['dim']}, rms {_g(lat['rms'])}, std {_g(lat['std'])}, "
            f"mean row norm {_g(lat['row_norm_mean'])}")
    if lat.get("cosine_mean") is not None:
        desc += f", pairwise cosine mean {lat['cosine_mean']:.3f} (max {lat['cosine_max']:.3f})"
    desc += f", {lat['identical_rows']} identical rows"
    if lat.get("drift") is not None:
        desc += f"; moved {lat['drift']:.3g} of their norm since the --against checkpoint"
    if lat["std"] and abs(lat["std"] / SEED_LATENT_STD - 1) < SEED_STD_MATCH_REL and lat.get("drift") in (None, 0.0):
        desc += (f". The scale matches normal(std={SEED_LATENT_STD}), the effective init of the seed's "
                 "randn-then-normal_ "
                 "code; whether it matters depends on a normalisation before the attention (a pre-norm rescales it "
                 "away)")
    return desc + "."


class CheckpointLatents(CheckpointRule):
    emits = (Emit("latents_symmetric", ("error",), "symmetric_latents", 1),
             Emit("latents_duplicate_rows", ("warning",), "symmetric_latents", 2),
             Emit("latents_similar", ("warning",), "symmetric_latents", 3),
             Emit("latents", ("info",)))
    thresholds = {"LATENT_COSINE": LATENT_COSINE, "SEED_LATENT_STD": SEED_LATENT_STD,
                  "SEED_STD_MATCH_REL": SEED_STD_MATCH_REL}

    def check(self, a, ctx):
        out = []
        for lat in a.latents:
            out += self._shape(lat, ctx)
            out.append(Finding("latents", "info", ctx.name, _describe(lat), lat, "", lat["name"]))
        return out

    def _shape(self, lat: dict, ctx: RunContext) -> list[Finding]:
        if lat["rows"] > 1 and lat["unique_rows"] == 1:
            return [Finding(
                "latents_symmetric", "error", ctx.name,
                f"all {lat['rows']} rows of {lat['name']} are "
                f"identical{' (all zero)' if lat['zero_rows'] == lat['rows'] else ''}: every "
                "latent computes the same thing and gets the same gradient, so the symmetry never breaks.",
                {k: lat[k] for k in ("shape", "rms", "unique_rows", "identical_rows", "zero_rows")},
                "Initialise the latents with random values (e.g. normal std 0.02), not a constant.", lat["name"])]
        if lat["identical_rows"]:
            return [Finding(
                "latents_duplicate_rows", "warning", ctx.name,
                f"{lat['identical_rows']} of the {lat['rows']} rows of {lat['name']} duplicate another row: duplicated "
                "latents stay identical under training.",
                {k: lat[k] for k in ("shape", "unique_rows", "identical_rows")},
                "Check the latent initialisation (a repeat/expand of one vector?).", lat["name"])]
        if lat.get("cosine_mean") is not None and lat["cosine_mean"] > LATENT_COSINE:
            return [Finding(
                "latents_similar", "warning", ctx.name,
                f"the rows of {lat['name']} are near copies: mean pairwise cosine {lat['cosine_mean']:.3f}.",
                {k: lat.get(k) for k in ("shape", "cosine_mean", "cosine_max", "rms")},
                "Check the latent init and whether the latents receive distinct gradients.", lat["name"])]
        return []


class CheckpointTemperature(CheckpointRule):
    """The stored logit scale against the clamp the context knows (the config's, or open_clip's 100)."""

    emits = (Emit("temperature_at_clamp", ("warning",), "temperature", 3),
             Emit("temperature_toward_1", ("warning",), "temperature", 2))

    def check(self, a, ctx):
        ls = a.logit_scale
        if ls is None or ls["exp"] is None:
            return []
        return temperature_findings(ctx.name, ls["exp"], ctx.max_logit_scale,
                                    {"name": ls["name"], "value": ls["value"]},
                                    what=f"{ls['name']} = {ls['value']:.4f} (exp)", target=ls["name"])


class CheckpointChange(CheckpointRule):
    """Per-layer relative change against the --against checkpoint."""

    emits = (Emit("checkpoints_identical", ("warning",)), Emit("layers_changed_least", ("info",)),
             Emit("layers_unchanged", ("warning",), "no_gradient_path", 2), Emit("layers_barely_changed", ("warning",)),
             Emit("against_keys_differ", ("warning",)))
    thresholds = {"BARELY_CHANGED_OF_MEDIAN": BARELY_CHANGED_OF_MEDIAN, "LEAST_CHANGED_SHOWN": LEAST_CHANGED_SHOWN}

    def check(self, a, ctx):
        if a.against is None:
            return []
        layers = [r for r in a.against["layers"] if r["rel_change"] is not None]
        if layers and all(r["abs_change"] == 0 for r in a.against["layers"]):
            out = [Finding("checkpoints_identical", "warning", ctx.name,
                           "the two checkpoints hold identical values in every shared tensor: nothing was trained "
                           "between them.",
                           {"layers": len(a.against["layers"])},
                           "Check that the optimizer steps and that the right files were saved.")]
        else:
            out = self._layers(layers, ctx) if layers else []
        differ = a.against["missing_in_base"] + a.against["missing_in_checkpoint"] + a.against["shape_differs"]
        if differ:
            out.append(Finding("against_keys_differ", "warning", ctx.name,
                               f"{len(differ)} tensor(s) are not comparable with the --against checkpoint (missing "
                               "on one side "
                               f"or another shape): {', '.join(differ[:5])}{' ...' if len(differ) > 5 else ''}.",
                               {k: a.against[k][:20] for k in ("missing_in_base", "missing_in_checkpoint",
                                                               "shape_differs")}))
        return out

    def _layers(self, layers: list[dict], ctx: RunContext) -> list[Finding]:
        med = sorted(r["rel_change"] for r in layers)[len(layers) // 2]
        least = layers[:LEAST_CHANGED_SHOWN]
        out = [Finding(
            "layers_changed_least", "info", ctx.name,
            "layers that changed least (‖θ−θ₀‖/‖θ₀‖): "
            + ", ".join(f"{r['layer']} {r['rel_change']:.3g}" for r in least)
            + f"; median layer {med:.3g}, largest {layers[-1]['layer']} {layers[-1]['rel_change']:.3g}.",
            {"least": least, "median_rel_change": med, "most": layers[-1]}, "", least[0]["layer"])]
        frozen = [r for r in layers if r["abs_change"] == 0]
        if frozen:
            out.append(Finding(
                "layers_unchanged", "warning", ctx.name,
                f"{len(frozen)} layer(s) are bit-identical to the --against checkpoint while others changed: "
                + ", ".join(r["layer"] for r in frozen[:8]) + (" ..." if len(frozen) > 8 else "")
                + ". They never learned: frozen, missing from the optimizer, or no gradient reaches them.",
                {"layers": [r["layer"] for r in frozen], "median_rel_change": med},
                "Check requires_grad and the optimizer's param groups for these layers.", frozen[0]["layer"]))
        # scalars (a temperature, a gate) are left out: their relative change depends on their value
        barely = [r for r in layers if r["numel"] > 1 and 0 < r["rel_change"] < BARELY_CHANGED_OF_MEDIAN * med]
        if barely:
            out.append(Finding(
                "layers_barely_changed", "warning", ctx.name,
                f"{len(barely)} layer(s) moved less than {BARELY_CHANGED_OF_MEDIAN:g} x the median layer's relative "
                "change "
                f"({med:.3g}): " + ", ".join(f"{r['layer']} {r['rel_change']:.3g}" for r in barely[:8]) + ".",
                {"layers": barely[:20], "median_rel_change": med, "threshold_of_median": BARELY_CHANGED_OF_MEDIAN},
                "Check their gradient norms with `diagnose gradflow`.", barely[0]["layer"]))
        return out


class ConfigMatch(CheckpointRule):
    """Keys and shapes against the reference model of --config."""

    emits = (Emit("config_match", ("info",)), Emit("config_mismatch", ("error",)))

    def check(self, a, ctx):
        c = a.config
        if c is None:
            return []
        if c["matches"]:
            return [Finding("config_match", "info", ctx.name,
                            f"all {c['expected']} tensors match the reference model of {c['config']} at scale "
                            f"{c['scale']} "
                            "(names and shapes).", {k: c[k] for k in ("config", "scale", "expected", "found")})]
        parts = []
        for key, label in (("missing", "missing"), ("unexpected", "unexpected")):
            if c[key]:
                parts.append(f"{len(c[key])} {label} ({', '.join(c[key][:4])}{' ...' if len(c[key]) > 4 else ''})")
        if c["shape_mismatch"]:
            s0 = c["shape_mismatch"][0]
            parts.append(f"{len(c['shape_mismatch'])} with another shape (e.g. {s0['name']} "
                         f"{tuple(s0['checkpoint'])} vs {tuple(s0['config'])})")
        scales = c.get("matching_scales")
        hint = f" It matches scale {', '.join(scales)}: pass --scale {scales[0]}." if scales else ""
        return [Finding("config_mismatch", "error", ctx.name,
                        f"the checkpoint does not match the reference model of {c['config']} at scale {c['scale']}: "
                        + "; ".join(parts) + "." + hint,
                        {k: (c[k][:20] if isinstance(c[k], list) else c[k]) for k in c},
                        "Check the config (alias, --set overrides, --scale) the checkpoint was trained with.")]
