"""`diagnose datasignal FILE`: exit codes and one-line errors."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from diagnose.cli import app
from tests.conftest import tiny_config

runner = CliRunner()
PAIRS = ["dataset.num_train=256"]  # enough pairs for a 128/128 split at tiny widths


def _file(tmp_path, name, **tensors):
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def test_command_exit_codes_and_one_line_errors(tmp_path):
    cfg = tiny_config("direct", PAIRS)
    from reference_models.data import build_data

    tokens, text = build_data(cfg, 0)[0].batch(torch.arange(200))
    good = _file(tmp_path, "good.safetensors", image_tokens=tokens, text=text)
    res = runner.invoke(app, ["datasignal", str(good), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["data_signal"]["significant"] and out["data_signal"]["n_test"] == 100
    assert [f["id"] for f in out["findings"]] == ["data_signal_present"]
    shuffled = _file(tmp_path, "shuffled.safetensors", image_tokens=tokens, text=text[torch.randperm(200)])
    res = runner.invoke(app, ["datasignal", str(shuffled)])
    assert res.exit_code == 1 and "NO signal" in res.stdout and "no_data_signal" in res.stdout
    split = _file(tmp_path, "split.safetensors", image_tokens=tokens[:150], text=text[:150],
                  val_image_tokens=tokens[150:], val_text=text[150:])
    out = json.loads(runner.invoke(app, ["datasignal", str(split), "--json"]).stdout)
    assert (out["data_signal"]["n_fit"], out["data_signal"]["n_test"]) == (150, 50)
    nan_text = text.clone()
    nan_text[0, 0] = float("nan")
    for path, needle in [(_file(tmp_path, "notext.safetensors", image_tokens=tokens), "missing tensor 'text'"),
                         (_file(tmp_path, "nan.safetensors", image_tokens=tokens, text=nan_text), "NaN or Inf"),
                         (_file(tmp_path, "rows.safetensors", image_tokens=tokens, text=text[:10]), "one caption"),
                         (tmp_path / "absent.npz", "file not found")]:
        res = runner.invoke(app, ["datasignal", str(path)])
        assert res.exit_code == 2, res.output
        assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output
