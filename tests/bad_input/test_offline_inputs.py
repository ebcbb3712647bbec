"""report, checkpoint, lint, logs on hostile files: one line, exit 2, the inputs untouched."""

import json

import pytest
import torch
from safetensors.torch import save_file

from .conftest import TINY


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real gradflow run directory (tiny, 3 steps), written once for the report cases."""
    from typer.testing import CliRunner

    from diagnose.cli import app

    out = tmp_path_factory.mktemp("report") / "run"
    result = CliRunner().invoke(app, ["gradflow", "--config", "direct", *TINY, "--steps", "3", "--out", str(out)])
    assert result.exit_code in (0, 1), result.stderr
    return out


SUMMARIES = {
    "list": ([], "expected a JSON object with 'runs', got list"),
    "null": (None, "got NoneType"),
    "runs_string": ({"runs": "pixmo_alignment"}, "'runs' must be a non-empty list"),
    "runs_empty": ({"runs": []}, "'runs' must be a non-empty list"),
    "run_not_object": ({"runs": [3]}, "a run must be an object"),
    "run_unknown": ({"runs": [{"name": "other"}]}, "run 'other' has no rows"),
    "run_window_malformed": ({"runs": [{"name": "pixmo_alignment", "final_window_steps": [3]}]},
                             "missing or malformed entry"),
    "chance_text": ({"runs": [{"name": "pixmo_alignment", "chance_loss": "x"}]}, "'chance_loss' must be a number"),
    "findings_string": ({"runs": [{"name": "pixmo_alignment"}], "findings": "none"}, "'findings' must be a list"),
}


@pytest.mark.parametrize("case", list(SUMMARIES))
def test_report_on_malformed_summary_leaves_the_directory(cli, tmp_path, run_dir, case):
    import shutil

    bad = tmp_path / "run"
    shutil.copytree(run_dir, bad)
    content, message = SUMMARIES[case]
    (bad / "summary.json").write_text(json.dumps(content))
    cli.bad(["report", bad], contains=message)  # cli.bad asserts nothing under tmp_path changed


def test_report_records_with_text_values(cli, tmp_path, run_dir):
    import gzip
    import shutil

    bad = tmp_path / "run"
    shutil.copytree(run_dir, bad)
    with gzip.open(bad / "records.csv.gz", "wt") as fh:
        fh.write("run,step,probe,target,metric,value\npixmo_alignment,0,loss_split,total,value,hello\n")
    cli.bad(["report", bad], contains="'step' and 'value' must be numbers")


@pytest.mark.parametrize("case", ["missing", "file", "empty_dir", "truncated_records"])
def test_report_not_a_run_directory(cli, tmp_path, run_dir, case):
    import shutil

    target = tmp_path / "x"
    if case == "file":
        target.write_text("x")
    elif case == "empty_dir":
        target.mkdir()
    elif case == "truncated_records":
        shutil.copytree(run_dir, target)
        data = (target / "records.csv.gz").read_bytes()
        (target / "records.csv.gz").write_bytes(data[: len(data) // 2])
    cli.bad(["report", target])


def test_report_rebuilds_a_good_directory(cli, tmp_path, run_dir):
    """The counterpart: the same fixture is a valid input (so the cases above fail for their reason)."""
    import shutil

    good = tmp_path / "run"
    shutil.copytree(run_dir, good)
    result = cli(["report", good])
    assert result.exit_code in (0, 1), result.stderr
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


# --- checkpoint --------------------------------------------------------------------------------

def _hf(tmp_path, index):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    return d


class Evil:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.parametrize("case, message", [
    ("index_list", "not a valid shard index"),
    ("index_empty", "not a valid shard index"),
    ("weight_map_empty", "'weight_map' must be a non-empty mapping"),
    ("weight_map_list", "'weight_map' must be a non-empty mapping"),
    ("shard_outside", "lies outside"),
    ("no_tensors", "checkpoint holds no tensors"),
    ("pickle_global", "refused"),
    ("garbage", "not a loadable checkpoint"),
    ("empty_file", "checkpoint file is empty"),
    ("missing", "checkpoint not found"),
    ("dir_without_weights", "directory has no model weights"),
    ("against_disjoint", "share no tensor"),
    ("set_without_config", "--set needs --config"),
])
def test_checkpoint_bad_input(cli, tmp_path, case, message):
    args = []
    if case == "index_list":
        path = _hf(tmp_path, [])
    elif case == "index_empty":
        path = _hf(tmp_path, {})
    elif case == "weight_map_empty":
        path = _hf(tmp_path, {"weight_map": {}})
    elif case == "weight_map_list":
        path = _hf(tmp_path, {"weight_map": ["model-1.safetensors"]})
    elif case == "shard_outside":
        save_file({"w": torch.zeros(2)}, str(tmp_path / "outside.safetensors"))
        path = _hf(tmp_path, {"weight_map": {"w": "../outside.safetensors"}})
    elif case == "no_tensors":
        path = tmp_path / "none.safetensors"
        save_file({}, str(path))
    elif case == "pickle_global":
        path = tmp_path / "evil.pt"
        torch.save({"w": torch.zeros(2), "x": Evil()}, path)
    elif case == "garbage":
        path = tmp_path / "garbage.pt"
        path.write_bytes(b"\x00garbage" * 10)
    elif case == "empty_file":
        path = tmp_path / "empty.safetensors"
        path.write_bytes(b"")
    elif case == "missing":
        path = tmp_path / "nope.safetensors"
    elif case == "dir_without_weights":
        path = tmp_path / "d"
        path.mkdir()
    elif case == "against_disjoint":
        path, other = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
        save_file({"w": torch.zeros(2)}, str(path))
        save_file({"v": torch.zeros(3)}, str(other))
        args = ["--against", other]
    else:
        path = tmp_path / "a.safetensors"
        save_file({"w": torch.zeros(2)}, str(path))
        args = ["--set", "optimization.lr=1"]
    result = cli.bad(["checkpoint", path, *args], contains=message)
    assert "code ran" not in result.stdout


@pytest.mark.parametrize("latents", [torch.zeros(0, 4), torch.full((4, 4), float("nan")), torch.randn(1, 4)],
                         ids=["no_rows", "nan", "one_row"])
def test_checkpoint_odd_latents_are_findings_not_crashes(cli, tmp_path, latents):
    path = tmp_path / "lat.safetensors"
    save_file({"latents": latents, "proj.weight": torch.randn(3, 4)}, str(path))
    result = cli(["checkpoint", path])
    assert result.exit_code in (0, 1), result.stderr
    assert "Traceback" not in result.stderr and not result.stderr.strip()


def test_checkpoint_without_latents(cli, tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"proj.weight": torch.randn(3, 4)}, str(path))
    result = cli(["checkpoint", path, "--out", tmp_path / "ck"])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "ck" / "summary.json").is_file()


# --- lint --------------------------------------------------------------------------------------

@pytest.mark.parametrize("case, message", [
    ("empty_dir", "directory holds no Python files"),
    ("deep_unary", "nested too deeply"),
    ("deep_brackets", "cannot parse"),
    ("missing", "no such file or directory"),
    ("not_python", "not a Python file"),
])
def test_lint_bad_input(cli, tmp_path, case, message):
    if case == "empty_dir":
        path = tmp_path / "src"
        path.mkdir()
        (path / "notes.txt").write_text("x")
    elif case == "deep_unary":
        path = tmp_path / "deep.py"
        path.write_text("x = " + "-" * 100000 + "1\n")
    elif case == "deep_brackets":
        path = tmp_path / "deep.py"
        path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    elif case == "missing":
        path = tmp_path / "nope.py"
    else:
        path = tmp_path / "data.csv"
        path.write_text("a,b\n")
    cli.bad(["lint", path], contains=message)


# --- logs (the exit-code contract only; its readers are tested with the logs command) -----------

@pytest.mark.parametrize("case, message", [("missing", "log.csv"), ("directory_without_logs", "logdir")])
def test_logs_bad_path(cli, tmp_path, case, message):
    path = tmp_path / ("log.csv" if case == "missing" else "logdir")
    if case != "missing":
        path.mkdir()
    cli.bad(["logs", path, "--quiet"], contains=message)


def test_logs_accepts_quiet(cli, tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("step,loss\n" + "".join(f"{i},{4.1 + 0.001 * (i % 3)}\n" for i in range(50)))
    result = cli(["logs", path, "--batch-size", "64", "--quiet"])
    assert result.exit_code in (0, 1), result.stderr


def _text(path, text):
    path.write_text(text)
    return path


def _features(path, **tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


DATASIGNAL = {
    "missing_file": (lambda p: p / "nope.safetensors", "nope.safetensors"),
    "not_a_tensor_file": (lambda p: _text(p / "x.safetensors", "not safetensors"), "x.safetensors"),
    "no_text": (lambda p: _features(p / "f.safetensors", image_tokens=torch.randn(64, 8)), "missing tensor 'text'"),
    "rows_differ": (lambda p: _features(p / "f.safetensors", image_tokens=torch.randn(64, 8), text=torch.randn(60, 4)),
                    "one caption feature row per image"),
    "integer": (lambda p: _features(p / "f.safetensors", image_tokens=torch.ones(64, 8, dtype=torch.int64),
                                    text=torch.randn(64, 4)), "must be floating point"),
    "nan": (lambda p: _features(p / "f.safetensors", image_tokens=torch.full((64, 8), float("nan")),
                                text=torch.randn(64, 4)),
            "contain NaN or Inf"),
    "four_dims": (lambda p: _features(p / "f.safetensors", image_tokens=torch.randn(64, 2, 2, 8),
                                      text=torch.randn(64, 4)),
                  "expected (N, T, D) or pooled (N, D)"),
}


@pytest.mark.parametrize("case", list(DATASIGNAL))
def test_datasignal_bad_input(cli, tmp_path, case):
    make, message = DATASIGNAL[case]
    path = make(tmp_path)
    cli.bad(["datasignal", path], contains=message)


@pytest.mark.parametrize("present", ["val_image_tokens", "val_text"])
def test_features_source_with_half_a_val_pair(cli, tmp_path, present):
    """A features file with one of val_image_tokens / val_text: exit 2 naming the file and the missing
    key (a KeyError, exit 3, in `diagnose train` before), in training and in `diagnose datasignal`."""
    T, D, Dt = 37, 32, 24  # the tiny direct config's token count and widths
    val = {"val_image_tokens": torch.randn(32, T, D), "val_text": torch.randn(32, Dt)}
    path = _features(tmp_path / "f.safetensors", image_tokens=torch.randn(64, T, D), text=torch.randn(64, Dt),
                     **{present: val[present]})
    missing = ({"val_image_tokens", "val_text"} - {present}).pop()
    line = cli.bad(["train", "--config", "direct", *TINY, "--set", "dataset.source=features", "--set",
                    f"dataset.features.path={path}", "--steps", "2", "--out", tmp_path / "run"],
                   contains=f"missing tensor '{missing}'").stderr
    assert "f.safetensors" in line
    cli.bad(["datasignal", path], contains=f"f.safetensors: missing tensor '{missing}'")
