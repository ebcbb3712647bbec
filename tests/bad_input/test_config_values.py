"""Config values: finite, in range, named by key; validated once in reference_models/config.py,
before any training (so these cases take milliseconds)."""

import pytest

from .conftest import TINY


@pytest.mark.parametrize("override, message", [
    ("optimization.lr=nan", "'optimization.lr' = nan: expected a finite number"),
    ("optimization.lr=.inf", "'optimization.lr' = inf: expected a finite number"),
    ("optimization.lr=-1e-3", "'optimization.lr' = -0.001: expected a value >= 0"),
    ("optimization.epochs=0", "'optimization.epochs' = 0: expected an integer >= 1"),
    ("optimization.epochs=-2", "'optimization.epochs' = -2"),
    ("optimization.warmup_steps=-1", "'optimization.warmup_steps' = -1: expected a value >= 0"),
    ("optimization.grad_clip=-1", "'optimization.grad_clip' = -1.0: expected a value >= 0"),
    ("optimization.betas=[0.9,.nan]", "'optimization.betas'"),
    ("losses.temperature_init=.nan", "'losses.temperature_init' = nan: expected a finite number"),
    ("losses.max_logit_scale=-5", "'losses.max_logit_scale' = -5.0: expected a positive value"),
    ("dataset.images.encode_batch_size=0", "'dataset.images.encode_batch_size' = 0"),
    ("vision_encoder.hidden_dim=1000000000", "GiB"),
    ("dataset.num_train=100",
     "'dataset.batch_size' = 16: larger than the"),  # TINY sets batch 16 -> use 100 < 128 below
    ("seed=4294967296", "'seed' = 4294967296"),
    ("optimization.lr=fast", "'optimization.lr' = 'fast': expected float"),
    ("optimization.learning_rate=1", "unknown key 'optimization.learning_rate'"),
])
def test_bad_config_value(cli, override, message):
    args = ["train", "--config", "direct", *TINY, "--set", override]
    if override == "dataset.num_train=100":  # the case: batch 128 over 100 pairs must fail, not hang
        args = ["train", "--config", "direct", "--scale", "tiny", "--quiet", "--set", override, "--set",
                "dataset.batch_size=128"]
        message = "'dataset.batch_size' = 128: larger than the 100 training pairs"
    cli.bad(args, contains=message)


def test_huge_batch_fails_fast(cli):
    cli.bad(["train", "--config", "direct", "--scale", "tiny", "--quiet", "--set", "dataset.batch_size=1000000000"],
            contains="dataset.batch_size")  # over memory or over the data set: refused before allocating


@pytest.mark.parametrize("command", [["gradflow", "--config"], ["ablate", "--config"], ["compare", "direct"]])
def test_nan_lr_in_every_training_command(cli, command):
    cli.bad([*command, "perceiver", *TINY, "--set", "optimization.lr=nan"], contains="expected a finite number")


@pytest.mark.parametrize("text, message", [
    ("name: x\noptimization:\n  lr: 1.0e-4\n  lr: 2.0e-4\n", "key 'lr' is given twice (lines 3 and 4)"),
    ("name: x\nname: y\n", "key 'name' is given twice"),
    ("optimization:\n  lr: .nan\n", "'optimization.lr' = nan"),
    ("optimization:\n  lr: .inf\n", "'optimization.lr' = inf"),
    ("optimization:\n  epochs: 0\n", "'optimization.epochs' = 0"),
    ("- a\n- b\n", "expected a YAML mapping at the top level"),
    ("", "config file is empty"),
    ("a: [1, 2\n", "not valid YAML"),
    ("[" * 2000 + "]" * 2000 + "\n", "bad.yaml"),
])
def test_bad_yaml(cli, tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    cli.bad(["train", "--config", tmp_path / "bad.yaml", *TINY], contains=message)


def test_config_not_found(cli):
    cli.bad(["train", "--config", "missing.yaml", *TINY], contains="missing.yaml: config file not found")


def _alias_bomb(levels: int, width: int = 9) -> str:
    """'Billion laughs': each anchor a list of `width` aliases of the previous one: width**levels values
    once expanded (9**9 = 387M here; PyYAML itself shares the nodes, so loading is instant)."""
    rows = [f"  l0: &l0 [{', '.join(['1'] * width)}]"]
    rows += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return rows


@pytest.mark.parametrize("where", ["losses.mrl_dims", "optimization.betas", "name"])
def test_yaml_alias_bomb_under_a_valid_key(cli, tmp_path, where):
    """Formatting the value in the error grew past 1.5 GB before; refused from the node graph now."""
    section, key = where.split(".") if "." in where else (None, where)
    # the anchors live inside the value itself (a config's mappings hold schema keys only)
    value = "[" + ", ".join(row.split(": ", 1)[1] for row in _alias_bomb(9)) + "]"
    lines = ["name: bomb", f"{section}:", f"  {key}: {value}"] if section else [f"{key}: {value}"]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    cli.bad(["train", "--config", tmp_path / "bomb.yaml", *TINY],
            contains=f"bomb.yaml: key '{where}': YAML aliases (*name) expand to more than")


def test_long_values_are_shortened_in_messages(cli, tmp_path):
    """A wrong-typed value under the alias bound is still shown bounded (its first elements)."""
    (tmp_path / "c.yaml").write_text("losses:\n  mrl_dims: [" + ", ".join(['"x"'] * 5000) + "]\n")
    line = cli.bad(["train", "--config", tmp_path / "c.yaml", *TINY], contains="'losses.mrl_dims' = 'x'").stderr
    assert len(line) < 300
    (tmp_path / "d.yaml").write_text("losses:\n  mrl_dims: [" + ", ".join(["[1, 2]"] * 5000) + "]\n")
    line = cli.bad(["train", "--config", tmp_path / "d.yaml", *TINY], contains="'losses.mrl_dims' = [1, 2]").stderr
    assert len(line) < 300
    (tmp_path / "e.yaml").write_text("name: " + "y" * 100_000 + "\nlosses:\n  mrl_dims: {a: 1}\n")
    line = cli.bad(["train", "--config", tmp_path / "e.yaml", *TINY], contains="= {'a': 1}: expected a list").stderr
    assert len(line) < 300


def test_yaml_anchors_within_the_bound_still_work(tmp_path):
    from reference_models import load_config

    (tmp_path / "m.yaml").write_text("name: m\nvision_encoder: &v\n  hidden_dim: 48\ntext_encoder:\n  <<: *v\n"
                                     "losses:\n  mrl_dims: &dims [8, 16]\n")
    cfg = load_config(tmp_path / "m.yaml")
    assert cfg.text_encoder.hidden_dim == 48 and cfg.losses.mrl_dims == [8, 16]
