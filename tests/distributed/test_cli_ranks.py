"""`python -m diagnose` on 2 ranks (torchrun's environment variables, gloo): rank 0 alone writes the
run directory, `diagnose report` rebuilds it, and a rank that dies stops the other with one clear line."""

import json
import subprocess
import time

import pandas as pd
from typer.testing import CliRunner

from diagnose.cli import app

from .ranks import PORT_TAKEN, PYTHON, ROOT, cli_env, free_port

TINY = ["--scale", "tiny", "--set", "dataset.num_train=64", "--set", "dataset.num_val=16", "--set",
        "dataset.batch_size=8"]


def _launch(args, port, **env):
    return [subprocess.Popen([PYTHON, "-m", "diagnose", *args], cwd=ROOT, env=cli_env(r, 2, port, **env),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]


def _gradflow(out, *sets):
    extra = [x for s in sets for x in ("--set", s)]
    for _ in range(3):  # the free port can be taken by another process before rank 0 binds it
        procs = _launch(["gradflow", "--config", "direct", "--steps", "12", "--out", str(out), *TINY, *extra],
                        free_port())
        results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
        if not any(PORT_TAKEN in r[2] for r in results):
            return results
    return results


def test_gradflow_on_two_ranks_writes_once_and_flags_a_gather_without_grad(tmp_path):
    out = tmp_path / "run"
    (code0, out0, err0), (code1, out1, err1) = _gradflow(out, "losses.gather_features=true")
    assert code0 == code1 == 1, (err0, err1)  # error findings; both ranks exit with rank 0's code
    assert "report:" in out0 and out1 == ""  # rank 0 alone prints
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # one directory, no staging leftovers
    summary = json.loads((out / "summary.json").read_text())
    run = summary["runs"][0]
    assert run["world_size"] == 2 and run["rank"] == 0 and run["candidates"] == 16
    ids = {f["id"] for f in summary["findings"]}
    assert "gathered_gradient_scale" in ids
    finding = next(f for f in summary["findings"] if f["id"] == "gathered_gradient_scale")
    assert abs(finding["evidence"]["grad_scale_median"] - 0.5) < 1e-3
    records = pd.read_csv(out / "records.csv.gz")
    extras = records[records["target"] == "extras"]
    assert set(extras[extras["metric"] == "world_size"]["value"]) == {2.0}
    assert {"loss_clip@rank0", "loss_clip@rank1", "replica_param_spread"} <= set(extras["metric"])
    assert (extras[extras["metric"] == "replica_param_spread"]["value"] == 0).all()  # DDP keeps replicas equal
    rebuilt = CliRunner().invoke(app, ["report", str(out)])
    assert rebuilt.exit_code == 1, rebuilt.output
    assert {f["id"] for f in json.loads((out / "summary.json").read_text())["findings"]} == ids


def test_gather_with_grad_is_not_flagged(tmp_path):
    results = _gradflow(tmp_path / "run", "losses.gather_features=true", "losses.gather_with_grad=true")
    assert all(r[0] in (0, 1) for r in results), results
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "gathered_gradient_scale" not in {f["id"] for f in summary["findings"]}


def test_a_killed_rank_stops_the_other_with_one_line_and_nothing_written(tmp_path):
    out = tmp_path / "run"
    procs = _launch(["train", "--config", "direct", "--steps", "100000", "--out", str(out), *TINY, "--quiet"],
                    free_port(), DIAGNOSE_DIST_TIMEOUT="20")
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".run") for p in tmp_path.iterdir()):  # rank 0 is training (staged dir)
        assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].communicate()
        time.sleep(0.2)
    time.sleep(1.0)
    procs[1].kill()
    start = time.monotonic()
    code = procs[0].wait(timeout=60)
    waited = time.monotonic() - start
    _, err = procs[0].communicate()
    procs[1].communicate()
    assert code == 3, err
    assert waited < 30
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "RankLost: rank 0 of 2: a collective failed" in lines[0], err
    assert list(tmp_path.iterdir()) == []  # nothing half-written: no run directory, no staging directory
