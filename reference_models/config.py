"""Config schema of the seed's YAML files, loaded with validation.

The schema follows the seed's section names (`vision_encoder`, `text_encoder`, `losses`,
`dataset`, `optimization`). Every field carries a short comment; fields the seed states are marked
"seed", the others are documented defaults. Errors are `ConfigError` with one line that names the
file, the key and what was expected, so the CLI can print it and exit 2.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """Bad user input (config file, key, value). The message is one line, fit for stderr."""


LatentInit = Literal["seed", "randn", "normal", "trunc_normal", "xavier", "zeros"]
PoolingType = Literal["simple"]
PerceiverPool = Literal["mean", "attention"]
DataSource = Literal["synthetic", "features", "images"]
Schedule = Literal["cosine", "constant", "linear"]
MrlLogMode = Literal["seed", "mean"]


@dataclass
class VisionEncoderConfig:
    name: str = "openai/clip-vit-large-patch14-336"  # seed: frozen CLIP ViT-L/14-336 backbone
    hidden_dim: int = 1024  # seed: width of the backbone's patch tokens (B, 577, 1024)
    num_tokens: int = 577  # seed: 1 CLS + 24x24 patches at 336px / 14
    freeze: bool = True  # seed: the backbone is frozen; only what follows trains
    use_perceiver: bool = False  # seed: true for perceiver_mrl_alignment, false for pixmo
    perceiver_num_latents: int = 64  # seed
    perceiver_latent_dim: int = 1024  # seed
    perceiver_num_layers: int = 4  # seed
    perceiver_num_heads: int = 8  # not in seed: Flamingo's resampler uses 8 heads
    perceiver_mlp_ratio: int = 4  # not in seed: the usual transformer MLP width
    # seed encoders/perceiver.py:155-156: randn then normal_(std=0.02); the last init wins
    perceiver_latent_init: LatentInit = "seed"
    perceiver_latent_init_std: float = 0.02  # std used by "seed", "normal", "trunc_normal"
    perceiver_pooling: PerceiverPool = "mean"  # seed encoders/vision.py:168 mean pool; "attention" = fix 4
    use_attention_pooling: bool = True  # seed: direct model pools tokens with a learned scorer
    pooling_type: PoolingType = "simple"  # seed: linear scorer, softmax over tokens, weighted sum
    attention_pool_dropout: float = 0.0  # seed fix 4 uses dropout=0.1 in SimpleAttentionPooling
    pooling_softmax_dim: int = 1  # softmax axis of the pooling scores (B, T): 1 = tokens (correct)
    # fault-injection switch (default = healthy): true runs the first projector under torch.no_grad,
    # so its weights never receive a gradient (the "accidentally frozen projector" bug)
    projector_no_grad: bool = False


@dataclass
class TextEncoderConfig:
    name: str = "openai/clip-vit-large-patch14-336"  # seed: differs between the two configs
    hidden_dim: int = 768  # pooled output width of the frozen text encoder (CLIP-L text, mpnet: 768)
    freeze: bool = True  # frozen; only the projection trains
    pooling: Literal["pooler", "mean"] = "pooler"  # how a real encoder is pooled (images source)
    # fault-injection switch (default = healthy): true detaches the projected text features, cutting
    # the gradient path from the loss to the text projection
    detach_projection: bool = False


@dataclass
class ModelConfig:
    projection_dim: int = 4096  # seed diagrams: (B, 4096) joint embedding
    # fault-injection switch (default = healthy): false skips the L2 normalisation of both
    # embeddings, so the contrastive logits see raw, unbounded dot products
    l2_normalize: bool = True


@dataclass
class LossConfig:
    contrastive: float = 0.25  # seed: CLIP InfoNCE weight
    mrl: float = 1.0  # seed: Matryoshka weight
    mrl_dims: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024, 2048, 4096])
    sample_single_mrl_dim: bool = True  # seed: one nested dim sampled per batch
    temperature_init: float = 0.07  # open_clip: logit_scale = ln(1/0.07)
    max_logit_scale: float = 100.0  # open_clip clamps exp(logit_scale) at 100
    learnable_temperature: bool = True
    # "seed": loss_mrl logged as the sum over the dims evaluated this step (one dim when sampling);
    # "mean": mean over evaluated dims, with the sampled dim logged beside it
    mrl_log_mode: MrlLogMode = "seed"
    # under torchrun (open_clip's names, see reference_models/distributed.py): all-gather features across
    # ranks (B*W candidates per row), make the gather differentiable, score only this rank's rows
    gather_features: bool = False
    gather_with_grad: bool = False
    local_loss: bool = False


@dataclass
class SyntheticConfig:
    """Knobs of the CLIP-like synthetic source; see reference_models/data.py for their origin."""

    concept_dim: int = 64  # latent concepts shared by an image and its caption
    shared_scale: float = 2.0  # norm of the component common to all images/tokens, / content norm
    high_norm_frac: float = 0.02  # share of patch tokens that are high-norm "register" tokens
    high_norm_scale: float = 10.0  # their norm relative to a typical token
    # global (CLS-like) content of the high-norm tokens: 1.0 = the image's global content scaled with the
    # token, the same content share as a typical token's; 0.0 = content-free (a constant direction)
    high_norm_content: float = 1.0
    content_frac: float = 0.25  # share of an image's concepts each patch token carries
    position_scale: float = 0.5  # positional component (same for all images), / content norm
    token_noise: float = 0.5  # per-token isotropic noise, / content norm
    text_noise: float = 0.3  # caption noise in concept space, / concept norm
    text_shared_scale: float = 1.0  # text anisotropy: common text direction, / text content norm


@dataclass
class FeaturesConfig:
    path: str = ""  # .safetensors / .pt (weights_only) / .npz with image_tokens (N,T,D), text (N,Dt)
    val_fraction: float = 0.2  # held-out share when the file has no val_* tensors


@dataclass
class ImagesConfig:
    root: str = ""  # image folder; caption rows name images relative to it
    captions: str = ""  # CSV (header: image, caption) or JSON lines {"image", "caption"}
    vision_model: str = "random"  # local CLIPVisionModel directory, or "random" (tiny, random weights)
    text_model: str = "random"  # local CLIPTextModel / transformers encoder directory, or "random"
    vision_layer: int = -2  # hidden layer whose patch tokens are used (LLaVA: penultimate)
    keep_cls: bool = True  # keep the CLS token in front of the patch tokens (seed: 577 = 1 + 576)
    encode_batch_size: int = 16  # images encoded per batch (only one batch is in memory)
    cache_dir: str = ""  # where encoded features are cached (default: <root>/.diagnose-cache)


@dataclass
class DatasetConfig:
    source: DataSource = "synthetic"
    batch_size: int = 128  # seed: 64 (perceiver), 128 (direct)
    num_train: int = 8192  # synthetic samples in the train split
    num_val: int = 1024  # held-out retrieval split: chance R@1 = 1/num_val
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    # fault-injection switch (default = healthy): true pairs each training image with the caption of
    # another sample (a fixed seeded permutation): misaligned pairs; the held-out split stays paired
    shuffle_captions: bool = False


@dataclass
class OptimizationConfig:
    lr: float = 2e-4  # seed: 2e-3 (perceiver), 2e-4 (direct)
    weight_decay: float = 0.05  # not in seed: open_clip's default for projection training
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])  # open_clip CLIP betas
    eps: float = 1e-6  # open_clip
    schedule: Schedule = "cosine"  # not in seed: cosine decay after linear warm-up
    warmup_steps: int = 0  # not in seed: 0 keeps a 150-step diagnostic run at the configured lr
    epochs: int = 10  # seed: 10 epochs
    grad_clip: float = 0.0  # 0 = off (the seed does not mention clipping)
    # With Adam the change a step makes to a layer's output grows with its fan-in, so a model shrunk
    # k-fold in width needs k x the lr on its weight matrices to see the same dynamics (muP, Yang et
    # al. 2022, Tensor Programs V). When true, --scale small|tiny multiply matrix_lr_multiplier by k.
    # Vectors (biases, norm gains, latents, temperature) keep the configured lr.
    scale_transfers_lr: bool = True
    matrix_lr_multiplier: float = 1.0  # lr multiplier for weight matrices (Linear weights)


@dataclass
class AlignmentConfig:
    name: str = "alignment"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    vision_encoder: VisionEncoderConfig = field(default_factory=VisionEncoderConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    scale: str = "full"  # set by apply_scale; recorded in every run
    source: str = ""  # set by load_config: the alias or path this config was loaded from

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ALIASES = {
    "perceiver": "perceiver_mrl_alignment.yaml",
    "direct": "pixmo_alignment.yaml",
}


# ---------------------------------------------------------------------------------------------
# schema walking


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def all_keys(cls: type = AlignmentConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the schema (leaves and sections)."""
    keys = []
    for name, tp in _field_types(cls).items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        if dataclasses.is_dataclass(tp):
            keys.extend(all_keys(tp, dotted + "."))
    return keys


def _closest(key: str) -> str:
    keys = all_keys()
    leaf = key.rsplit(".", 1)[-1]
    match = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    if not match:  # try the leaf name alone against leaf names
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in keys}
        leaf_match = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
        match = [by_leaf[leaf_match[0]]] if leaf_match else []
    return f"; did you mean '{match[0]}'?" if match else ""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {typing.get_args(tp)[0].__name__}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check `value` against the annotated type; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{where}: key '{key}' = {value!r}: expected {_type_name(tp)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise bad
        return [_coerce(v, inner, key, where) for v in value]
    if origin in (typing.Union, types.UnionType):
        raise TypeError("unions are not used in the schema")
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads "2e-4" without a dot as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise bad
        return str(value)
    raise TypeError(f"unsupported schema type {tp}")


def _build(cls: type, data: Any, prefix: str, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: section '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {type(data).__name__}")
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in types_:
            raise ConfigError(f"{where}: unknown key '{dotted}'{_closest(dotted)}")
        tp = types_[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, dotted + ".", where)
        else:
            kwargs[key] = _coerce(value, tp, dotted, where)
    return cls(**kwargs)


SEED_RANGE = 2**32  # numpy's seed range; a seed outside it would not replay in every data loader


def _nonfinite(node: Any, prefix: str = "") -> tuple[str, Any] | None:
    """The first float field (or list element) that is NaN or infinite, as (dotted key, value)."""
    for f in dataclasses.fields(node):
        value, key = getattr(node, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            found = _nonfinite(value, key + ".")
            if found:
                return found
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, float) and not math.isfinite(item):
                return key, value
    return None


def _check_ranges(cfg: AlignmentConfig, where: str) -> None:
    """Counts that must be >= 1, amounts that must be >= 0, seeds in range."""
    opt, ic = cfg.optimization, cfg.dataset.images
    at_least_one = {"optimization.epochs": opt.epochs, "dataset.images.encode_batch_size": ic.encode_batch_size,
                    "vision_encoder.perceiver_mlp_ratio": cfg.vision_encoder.perceiver_mlp_ratio}
    for key, val in at_least_one.items():
        if val < 1:
            raise ConfigError(f"{where}: key '{key}' = {val}: expected an integer >= 1")
    not_negative = {"optimization.lr": opt.lr, "optimization.weight_decay": opt.weight_decay,
                    "optimization.warmup_steps": opt.warmup_steps, "optimization.grad_clip": opt.grad_clip,
                    "optimization.matrix_lr_multiplier": opt.matrix_lr_multiplier,
                    "vision_encoder.perceiver_latent_init_std": cfg.vision_encoder.perceiver_latent_init_std}
    for key, val in not_negative.items():
        if val < 0:
            raise ConfigError(f"{where}: key '{key}' = {val}: expected a value >= 0")
    if not 0 <= cfg.seed < SEED_RANGE:
        raise ConfigError(f"{where}: key 'seed' = {cfg.seed}: expected an integer in [0, 2^32)")
    if not 0 < cfg.dataset.features.val_fraction < 1:
        raise ConfigError(f"{where}: key 'dataset.features.val_fraction' = {cfg.dataset.features.val_fraction}: expected a value in (0, 1)")


def validate(cfg: AlignmentConfig, where: str) -> None:
    """Cross-field checks that types cannot express."""
    v, loss, ds, opt = cfg.vision_encoder, cfg.losses, cfg.dataset, cfg.optimization
    bad = _nonfinite(cfg)
    if bad:
        raise ConfigError(f"{where}: key '{bad[0]}' = {bad[1]}: expected a finite number")
    _check_ranges(cfg, where)
    positive = {
        "model.projection_dim": cfg.model.projection_dim,
        "vision_encoder.hidden_dim": v.hidden_dim,
        "vision_encoder.num_tokens": v.num_tokens,
        "vision_encoder.perceiver_num_latents": v.perceiver_num_latents,
        "vision_encoder.perceiver_latent_dim": v.perceiver_latent_dim,
        "vision_encoder.perceiver_num_layers": v.perceiver_num_layers,
        "vision_encoder.perceiver_num_heads": v.perceiver_num_heads,
        "text_encoder.hidden_dim": cfg.text_encoder.hidden_dim,
        "dataset.batch_size": ds.batch_size,
        "dataset.num_train": ds.num_train,
        "dataset.num_val": ds.num_val,
        "losses.temperature_init": loss.temperature_init,
        "losses.max_logit_scale": loss.max_logit_scale,
        "optimization.eps": opt.eps,
    }
    for key, val in positive.items():
        if val <= 0:
            raise ConfigError(f"{where}: key '{key}' = {val}: expected a positive value")
    if opt.lr < 0 or opt.weight_decay < 0:
        raise ConfigError(f"{where}: key 'optimization.lr'/'weight_decay' must be >= 0")
    if v.perceiver_latent_dim % v.perceiver_num_heads:
        raise ConfigError(
            f"{where}: key 'vision_encoder.perceiver_num_heads' = {v.perceiver_num_heads}: "
            f"expected a divisor of perceiver_latent_dim={v.perceiver_latent_dim}"
        )
    if not loss.mrl_dims or any(d <= 0 or d > cfg.model.projection_dim for d in loss.mrl_dims):
        raise ConfigError(
            f"{where}: key 'losses.mrl_dims' = {loss.mrl_dims}: expected dims in 1..model.projection_dim={cfg.model.projection_dim}"
        )
    if sorted(set(loss.mrl_dims)) != loss.mrl_dims:
        raise ConfigError(f"{where}: key 'losses.mrl_dims' = {loss.mrl_dims}: expected strictly increasing dims")
    if ds.batch_size < 2:
        raise ConfigError(f"{where}: key 'dataset.batch_size' = {ds.batch_size}: contrastive training needs at least 2")
    if len(opt.betas) != 2 or not all(0 <= b < 1 for b in opt.betas):
        raise ConfigError(f"{where}: key 'optimization.betas' = {opt.betas}: expected two values in [0, 1)")
    if not 0 <= v.attention_pool_dropout < 1:
        raise ConfigError(f"{where}: key 'vision_encoder.attention_pool_dropout': expected a value in [0, 1)")
    if v.pooling_softmax_dim not in (0, 1):
        raise ConfigError(f"{where}: key 'vision_encoder.pooling_softmax_dim' = {v.pooling_softmax_dim}: expected 0 or 1")
    s = ds.synthetic
    if not 0 <= s.high_norm_frac < 1 or not 0 < s.content_frac <= 1:
        raise ConfigError(f"{where}: key 'dataset.synthetic.high_norm_frac'/'content_frac': expected fractions")
    if not s.high_norm_content >= 0:
        raise ConfigError(f"{where}: key 'dataset.synthetic.high_norm_content' = {s.high_norm_content}: expected a value >= 0")
    if ds.source == "features" and not ds.features.path:
        raise ConfigError(f"{where}: key 'dataset.features.path' is empty: source 'features' needs a file")


# ---------------------------------------------------------------------------------------------
# loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key; PyYAML reports it below
                continue
            if repeated:
                raise ConfigError(f"key '{key}' is given twice (lines {seen[key]} and {key_node.start_mark.line + 1})")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def resolve_config_path(name_or_path: str | Path) -> tuple[str, Path | None]:
    """Map an alias or bundled file name to its location; returns (label, path)."""
    text = str(name_or_path)
    if text in ALIASES:
        text = ALIASES[text]
    bundled = resources.files("reference_models") / "configs" / text
    if "/" not in text and bundled.is_file():
        return text, Path(str(bundled))
    path = Path(text).expanduser()
    if path.is_file():
        return str(path), path
    if path.suffix.lower() not in (".yaml", ".yml") and "/" not in text:
        raise ConfigError(f"unknown config '{text}': expected one of {', '.join(ALIASES)} or a YAML file path")
    raise ConfigError(f"{text}: config file not found")


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set '{text}': expected dotted.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _set_dotted(tree: dict, key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{where}: key '{'.'.join(parts[: i + 1])}' is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def config_from_dict(data: dict, where: str = "<config>", overrides: list[str] | tuple[str, ...] = ()) -> AlignmentConfig:
    tree = copy.deepcopy(data or {})
    for text in overrides:
        key, value = parse_override(text)
        if key not in all_keys():
            raise ConfigError(f"--set: unknown key '{key}'{_closest(key)}")
        _set_dotted(tree, key, value, "--set")
    cfg = _build(AlignmentConfig, tree, "", where)
    validate(cfg, where)
    return cfg


def load_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> AlignmentConfig:
    """Load an alias (`perceiver`, `direct`), a bundled file name, or a YAML path."""
    label, path = resolve_config_path(name_or_path)
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{label}: YAML nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{label}: not valid YAML{at}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}: cannot read config ({exc.__class__.__name__})") from None
    if data is None:
        raise ConfigError(f"{label}: config file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a YAML mapping at the top level")
    cfg = config_from_dict(data, label, overrides)
    cfg.source = str(name_or_path)
    if cfg.name == "alignment":
        cfg.name = Path(label).stem
    return cfg


def dump_config(cfg: AlignmentConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------------------------
# scale


@dataclass(frozen=True)
class Scale:
    """A reduced scale keeps layers, heads, the token:latent ratio and the width ratios."""

    width_div: int  # divides every width (vision, latent, text, projection, MRL dims)
    grid: int  # patch grid side: tokens = 1 + grid**2; latents follow the config's token:latent ratio


SCALES = {
    "full": Scale(width_div=1, grid=24),
    "small": Scale(width_div=8, grid=12),  # 145 tokens; seed ratio 577/64 -> 16 latents
    "tiny": Scale(width_div=32, grid=6),  # 37 tokens -> 4 latents
}


# Lower bound of a training step's memory: fp32 weights, their gradients and AdamW's two moments
# (4 x 4 bytes per trainable parameter) plus one fp32 batch of input tokens (B, T, D). Activations
# come on top, so a config over this bound cannot run here; it would swap or be OOM-killed instead.
BYTES_PER_TRAINED_PARAM = 16


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not every platform has these
        return None


def check_fits_memory(cfg: AlignmentConfig, where: str = "config") -> None:
    """Refuse a model that cannot fit in this machine's memory before allocating any of it (the
    parameters are counted on the meta device: no storage)."""
    import torch

    from .model import build_model

    total = physical_memory()
    if total is None:
        return
    with torch.device("meta"):
        params = sum(p.numel() for p in build_model(cfg).parameters() if p.requires_grad)
    ds, v = cfg.dataset, cfg.vision_encoder
    need = BYTES_PER_TRAINED_PARAM * params + 4 * ds.batch_size * v.num_tokens * v.hidden_dim
    if need > total:
        raise ConfigError(
            f"{where}: the model needs at least {need / 2**30:.1f} GiB ({params:,} trained parameters at scale "
            f"'{cfg.scale}', batch {ds.batch_size} x {v.num_tokens} x {v.hidden_dim} tokens) but this machine has "
            f"{total / 2**30:.1f} GiB: check model.projection_dim, *.hidden_dim, dataset.batch_size")


def apply_scale(cfg: AlignmentConfig, scale: str) -> AlignmentConfig:
    """Return a copy of `cfg` shrunk to `scale` (widths already below the target are kept), after
    checking that it fits in memory."""
    out = _shrink(cfg, scale)
    check_fits_memory(out, out.source or out.name)
    return out


def _shrink(cfg: AlignmentConfig, scale: str) -> AlignmentConfig:
    if scale not in SCALES:
        raise ConfigError(f"--scale '{scale}': expected one of {', '.join(SCALES)}")
    s = SCALES[scale]
    out = copy.deepcopy(cfg)
    out.scale = scale
    if s.width_div == 1:
        return out
    v = out.vision_encoder

    def shrink(x: int, floor: int = 4) -> int:
        return max(floor, x // s.width_div)

    v.hidden_dim = shrink(v.hidden_dim)
    v.perceiver_latent_dim = max(v.perceiver_num_heads * 2, shrink(v.perceiver_latent_dim))
    v.perceiver_latent_dim -= v.perceiver_latent_dim % v.perceiver_num_heads
    # keep the configured token:latent ratio rather than assuming the seed's
    ratio = v.num_tokens / v.perceiver_num_latents
    v.num_tokens = 1 + s.grid**2
    v.perceiver_num_latents = max(1, round(v.num_tokens / ratio))
    out.text_encoder.hidden_dim = shrink(out.text_encoder.hidden_dim)
    out.model.projection_dim = shrink(out.model.projection_dim)
    dims = sorted({max(1, d // s.width_div) for d in out.losses.mrl_dims})
    out.losses.mrl_dims = [d for d in dims if d <= out.model.projection_dim]
    out.dataset.synthetic.concept_dim = max(8, out.dataset.synthetic.concept_dim // max(1, s.width_div // 4))
    if out.optimization.scale_transfers_lr:
        out.optimization.matrix_lr_multiplier *= s.width_div
    return out
