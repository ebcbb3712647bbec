"""The seed's YAML configs loaded with validation into the schema of `reference_models.schema`.

The schema follows the seed's section names (`vision_encoder`, `text_encoder`, `losses`,
`dataset`, `optimization`); reduced scales are in `reference_models.scales`. Errors are `ConfigError`
with one line that names the file, the key and what was expected, so the CLI can print it and exit 2.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import reprlib
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from .schema import (
    ALIASES,
    AlignmentConfig,
    DatasetConfig,
    FeaturesConfig,
    ImagesConfig,
    LossConfig,
    ModelConfig,
    OptimizationConfig,
    SyntheticConfig,
    TextEncoderConfig,
    VisionEncoderConfig,
)

__all__ = [
    "ALIASES", "AlignmentConfig", "ConfigError", "DatasetConfig", "FeaturesConfig", "ImagesConfig", "LossConfig",
    "ModelConfig", "OptimizationConfig", "SyntheticConfig", "TextEncoderConfig", "VisionEncoderConfig", "all_keys",
    "config_from_dict", "dump_config", "load_config", "parse_override", "resolve_config_path", "validate",
]


class ConfigError(ValueError):
    """Bad user input (config file, key, value). The message is one line, fit for stderr."""


# A value in a message is shown bounded (a list's first elements, a long string's start): a message
# never grows with the value (an alias-expanded value would be gigabytes of text).
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict, _SHORT.maxset = 1, 8, 8, 4, 8
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 60, 40, 40


def short(value: Any) -> str:
    """`repr(value)`, bounded to about a hundred characters whatever the value's size."""
    return _SHORT.repr(value)


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


class _BadValue(ConfigError):
    """The one-line error for a value of the wrong type; the value is formatted (bounded) only when the
    error is raised, not for every value checked."""

    def __init__(self, head: str, value: Any, tail: str):
        super().__init__(head, value, tail)

    def __str__(self) -> str:
        head, value, tail = self.args
        return f"{head}{short(value)}{tail}"


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check `value` against the annotated type; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    bad = _BadValue(f"{where}: key '{key}' = ", value, f": expected {_type_name(tp)}")
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
        raise ConfigError(f"{where}: section '{prefix.rstrip('.') or '<top>'}' must be a mapping, got "
                          f"{type(data).__name__}")
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
        raise ConfigError(f"{where}: key 'dataset.features.val_fraction' = {cfg.dataset.features.val_fraction}: "
                          "expected a value in (0, 1)")


def validate(cfg: AlignmentConfig, where: str) -> None:
    """Cross-field checks that types cannot express."""
    v, loss, ds, opt = cfg.vision_encoder, cfg.losses, cfg.dataset, cfg.optimization
    bad = _nonfinite(cfg)
    if bad:
        raise ConfigError(f"{where}: key '{bad[0]}' = {short(bad[1])}: expected a finite number")
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
            f"{where}: key 'losses.mrl_dims' = {short(loss.mrl_dims)}: expected dims in "
            f"1..model.projection_dim={cfg.model.projection_dim}"
        )
    if sorted(set(loss.mrl_dims)) != loss.mrl_dims:
        raise ConfigError(f"{where}: key 'losses.mrl_dims' = {short(loss.mrl_dims)}: expected strictly increasing "
                          "dims")
    if ds.batch_size < 2:
        raise ConfigError(f"{where}: key 'dataset.batch_size' = {ds.batch_size}: contrastive training needs at least 2")
    if len(opt.betas) != 2 or not all(0 <= b < 1 for b in opt.betas):
        raise ConfigError(f"{where}: key 'optimization.betas' = {short(opt.betas)}: expected two values in [0, 1)")
    if not 0 <= v.attention_pool_dropout < 1:
        raise ConfigError(f"{where}: key 'vision_encoder.attention_pool_dropout': expected a value in [0, 1)")
    if v.pooling_softmax_dim not in (0, 1):
        raise ConfigError(f"{where}: key 'vision_encoder.pooling_softmax_dim' = {v.pooling_softmax_dim}: expected 0 "
                          "or 1")
    s = ds.synthetic
    if not 0 <= s.high_norm_frac < 1 or not 0 < s.content_frac <= 1:
        raise ConfigError(f"{where}: key 'dataset.synthetic.high_norm_frac'/'content_frac': expected fractions")
    if not s.high_norm_content >= 0:
        raise ConfigError(f"{where}: key 'dataset.synthetic.high_norm_content' = {s.high_norm_content}: expected a "
                          "value >= 0")
    if ds.source == "features" and not ds.features.path:
        raise ConfigError(f"{where}: key 'dataset.features.path' is empty: source 'features' needs a file")


# ---------------------------------------------------------------------------------------------
# loading


# Values a config's YAML aliases (*name) add once expanded: a config holds about a hundred values in all.
# PyYAML shares an aliased node instead of copying it, so nine nested aliases of nine items ("billion
# laughs") load in microseconds into a value of 9^9 elements that every later step (checking, copying,
# printing) walks in full. Aliases stay usable for what configs use them for (a shared block, a list).
MAX_YAML_VALUES = 10_000


def _expanded(node: yaml.Node, memo: dict[int, int], active: set[int], added: dict, path: list[str]) -> int:
    """The number of nodes under `node` with every alias expanded, each distinct node walked once (memo).
    `added["n"]` sums what the aliases add (an alias inside its own anchor: unbounded); past the bound the
    walk stops and `added["at"]` is the dotted key where it passed it."""
    key = id(node)
    if key in memo or key in active:  # a node met again: an alias, expanded once more
        added["n"] += memo.get(key, MAX_YAML_VALUES + 1)
        if added["n"] > MAX_YAML_VALUES and added["at"] is None:
            added["at"] = ".".join(path) or "<top>"
        return memo.get(key, MAX_YAML_VALUES + 1)
    active.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        pairs = [(None, child) for child in node.value]
    elif isinstance(node, yaml.MappingNode):
        pairs = [p for k, v in node.value for p in ((None, k), (str(getattr(k, "value", "?"))[:40], v))]
    else:
        pairs = []
    for name, child in pairs:
        size += _expanded(child, memo, active, added, path if name is None else [*path, name])
        if added["n"] > MAX_YAML_VALUES:
            break
    active.discard(key)
    memo[key] = size
    return size


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last), and a
    document whose aliases expand past MAX_YAML_VALUES values."""

    def construct_document(self, node):
        added = {"n": 0, "at": None}
        _expanded(node, {}, set(), added, [])
        if added["n"] > MAX_YAML_VALUES:
            raise ConfigError(f"key '{added['at']}': YAML aliases (*name) expand to more than "
                              f"{MAX_YAML_VALUES} values (an alias bomb?); a config holds about a hundred: write the "
                              "values out")
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *block`: its keys may be overridden here
                continue
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


def config_from_dict(data: dict, where: str = "<config>",
                     overrides: list[str] | tuple[str, ...] = ()) -> AlignmentConfig:
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
