"""Data signal: closed-form linear retrieval on paired inputs, its permutation test, the rule, the
command, `diagnose.watch` and the instrumented runs."""

import json
import math

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from diagnose import watch
from diagnose.cli import app
from diagnose.datasignal import PROBE, data_signal, ridge_gcv, sample_training_pairs
from diagnose.rules import rank_root_causes
from diagnose.rules.base import RunContext
from diagnose.rules.data import NoDataSignal
from tests.conftest import tiny_config

runner = CliRunner()
PAIRS = ["dataset.num_train=256"]  # enough pairs for a 128/128 split at tiny widths


def _pairs(shuffle: bool = False, n: int = 256):
    cfg = tiny_config("direct", PAIRS + (["dataset.shuffle_captions=true"] if shuffle else []))
    return sample_training_pairs(cfg, n=n)


def test_signal_on_synthetic_pairs_and_none_when_captions_shuffled():
    good = data_signal(*_pairs())
    assert good.significant and good.p_value <= good.alpha
    assert good.r1 >= 20 * good.chance_r1  # 128 held-out pairs: chance 0.0078
    bad = data_signal(*_pairs(shuffle=True))
    assert not bad.significant and bad.p_value > bad.alpha
    assert bad.i2t_r1 < bad.detectable_r1  # what chance gives: below the detection limit
    assert good.n_test == bad.n_test == 128


def test_ridge_matches_normal_equations_and_gcv_picks_the_grid_minimum():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 10, generator=g, dtype=torch.float64)
    y = x @ torch.randn(10, 4, generator=g, dtype=torch.float64) + 0.5 * torch.randn(60, 4, generator=g, dtype=torch.float64)
    x, y = x - x.mean(0), y - y.mean(0)
    grid = (1e-2, 1e-1, 1.0, 10.0)
    w, lam = ridge_gcv(x, y, grid)
    ref = torch.linalg.solve(x.t() @ x + lam * torch.eye(10, dtype=torch.float64), x.t() @ y)
    assert torch.allclose(w, ref, atol=1e-8)
    scale = float((torch.linalg.svdvals(x) ** 2).mean())

    def gcv(c):  # brute force: hat matrix
        h = x @ torch.linalg.solve(x.t() @ x + c * scale * torch.eye(10, dtype=torch.float64), x.t())
        return 60 * float(((y - h @ y) ** 2).sum()) / (60 - float(torch.trace(h))) ** 2

    assert lam == pytest.approx(min(grid, key=gcv) * scale)


def test_permutation_p_value_is_not_small_under_the_null_and_nan_is_not_a_score():
    g = torch.Generator().manual_seed(1)
    ps = [data_signal(torch.randn(200, 16, generator=g), torch.randn(200, 8, generator=g), seed=s).p_value for s in range(5)]
    assert min(ps) > 0.01  # independent image/text: no run of five should reject at 1%
    img, txt = _pairs(n=64)
    img[3, 0] = float("nan")
    out = data_signal(img, txt)
    assert math.isnan(out.r1) and math.isnan(out.p_value) and not out.significant
    assert out.to_dict()["r1"] is None  # JSON: null, never a number


def _records(significant: bool, loss: float, r1: float = 0.9) -> pd.DataFrame:
    rows = [(0, PROBE, "pairs", m, v) for m, v in {
        "r@1": r1 if significant else 0.008, "chance@1": 1 / 128, "p_value": 0.001 if significant else 0.4,
        "significant": float(significant), "detectable_r@1": 0.03, "n_test": 128, "hits": 100 if significant else 1}.items()]
    rows += [(s, "loss_split", "loss_clip", m, v) for s in range(20) for m, v in (("value", loss), ("chance", math.log(64)))]
    return pd.DataFrame(rows, columns=["step", "probe", "target", "metric", "value"])


def test_rule_tells_no_signal_apart_from_signal_not_learned():
    rule, ctx = NoDataSignal(), RunContext("r", batch_size=64)
    at_chance, learned = math.log(64), 0.2
    (f,) = rule(_records(False, at_chance), ctx)
    assert (f.id, f.severity) == ("no_data_signal", "error")
    causes = rank_root_causes([f.to_dict()], {"learned": False})
    assert causes[0]["cause"] == "misaligned_pairs" and causes[0]["tier"] == 1
    (w,) = rule(_records(False, learned), ctx)
    assert (w.id, w.severity) == ("no_data_signal", "warning")  # the model found something a linear map did not
    (i,) = rule(_records(True, at_chance), ctx)
    assert (i.id, i.severity) == ("data_signal_present", "info")
    assert rank_root_causes([i.to_dict()], {"learned": False})[0]["cause"] == "unexplained"  # info implicates nothing
    assert rule(_records(True, learned), ctx) == []


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


def test_watch_records_the_check_and_its_finding():
    model = torch.nn.Linear(4, 4)
    with watch(model, alarm="off", batch_size=16) as w:
        result = w.data_signal(*_pairs(shuffle=True))
    assert not result.significant
    recs = w.records
    assert set(recs[recs["probe"] == PROBE]["metric"]) >= {"r@1", "p_value", "significant"}
    summary = w.result().to_dict()
    assert summary["runs"][0]["data_signal"]["significant"] is False
    assert "no_data_signal" in {f["id"] for f in summary["findings"]}


def test_instrumented_run_checks_its_training_pairs():
    from diagnose.runs import instrumented_summary, run_instrumented

    cfg = tiny_config("direct", PAIRS + ["dataset.shuffle_captions=true"])
    summary, _ = instrumented_summary([run_instrumented(cfg, 3, "cpu")])
    d = summary.to_dict()
    assert d["runs"][0]["data_signal"]["significant"] is False
    assert d["runs"][0]["root_causes"][0]["cause"] == "misaligned_pairs"
    healthy = tiny_config("direct", PAIRS)
    summary, _ = instrumented_summary([run_instrumented(healthy, 3, "cpu")])
    run = summary.to_dict()["runs"][0]
    assert run["data_signal"]["significant"] is True
    assert "no_data_signal" not in {f["id"] for f in summary.to_dict()["findings"]}
