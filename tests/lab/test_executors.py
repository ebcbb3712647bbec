"""Executors: the same ablation in this process, in local worker processes and as Ray tasks on a local
Ray instance (`ray.init(num_cpus=2)`); a run that raises fails alone; a missing Ray is one line, exit 2."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from diagnose.cli import app
from diagnose.lab.executors import RUN_THREADS, Failed, Job, LocalExecutor, SerialExecutor

runner = CliRunner()
# the tiny perceiver of test_ablation (one known cause: the 10x learning rate), two fixes
ABLATE = ["ablate", "--config", "perceiver", "--scale", "tiny", "--steps", "30", "--quiet", "--seeds", "1",
          "--set", "dataset.num_train=1280", "--set", "dataset.num_val=64", "--set", "dataset.batch_size=32",
          "--set", "dataset.synthetic.shared_scale=0", "--fix", "lr_too_high", "--fix", "latent_init"]


def square(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed\nsecond line")
    return x * x


def jobs() -> list[Job]:
    return [Job(f"j{i}", square, (i,)) for i in range(5)]


def check_results(results: dict, done: list) -> None:
    assert list(results) == [f"j{i}" for i in range(5)]  # job order, whichever finished first
    assert [results[f"j{i}"] for i in (0, 1, 2, 4)] == [0, 1, 4, 16]
    assert results["j3"] == Failed("j3", "ValueError: three is not allowed second line")
    assert sorted(name for name, _ in done) == [f"j{i}" for i in range(5)]


@pytest.mark.parametrize("make", [SerialExecutor, lambda: LocalExecutor(2)], ids=["serial", "local"])
def test_a_job_that_raises_fails_alone(make):
    done = []
    with make() as ex:
        check_results(ex.run(jobs(), on_done=lambda n, r: done.append((n, r))), done)


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray", reason="Ray is in the dev extra ('.[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    # Ray workers cannot import this test module: ship its functions (the failing job) by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def test_ray_job_that_raises_fails_alone(ray_instance):
    from diagnose.lab.executors import RayExecutor

    done = []
    with RayExecutor() as ex:
        assert not ex.started  # an instance this process started is used as it is, and left running
        check_results(ex.run(jobs(), on_done=lambda n, r: done.append((n, r))), done)
    assert ray_instance.is_initialized()


def _hypotheses(out) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    runs = {r["name"]: (r["verdict"]["label"], round(r["final_loss"]["loss_clip"], 4)) for r in summary["runs"]}
    return {"verdicts": {h["id"]: h["verdict"] for h in summary["hypotheses"]}, "runs": runs,
            "answer": (out / "report.md").read_text().split("## Verdict")[0]}


@pytest.fixture(scope="module")
def local_ablation(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "ab"
    r = runner.invoke(app, [*ABLATE, "--out", str(out), "--workers", "2"])
    assert r.exit_code in (0, 1), r.output
    return out


def test_ray_executor_gives_the_local_verdicts(ray_instance, local_ablation, tmp_path):
    out = tmp_path / "ab"
    threads = RUN_THREADS  # what each local worker uses, whatever the machine
    r = runner.invoke(app, [*ABLATE, "--out", str(out), "--executor", "ray", "--cpus-per-run", str(threads)])
    assert r.exit_code in (0, 1), r.output
    ray_result, local_result = _hypotheses(out), _hypotheses(local_ablation)
    assert ray_result == local_result  # same seeds, same threads per run: the same numbers
    assert local_result["verdicts"]["lr_too_high"] == "confirmed"
    assert json.loads((out / "summary.json").read_text())["ablation"]["executor"] == "ray"


class FailOne:
    """Wraps an executor; the job named `name` runs a function that raises (in the worker, as a real
    failure would)."""

    def __init__(self, inner, name: str):
        self.inner, self.name = inner, name

    def run(self, jobs, on_done=None):
        return self.inner.run([Job(j.name, square, (3,)) if j.name == self.name else j for j in jobs], on_done)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.inner.close()


def test_ray_run_that_raises_is_reported_while_the_others_complete(ray_instance, tmp_path, monkeypatch):
    from diagnose.cli.commands import ablate
    from diagnose.lab.executors import RayExecutor

    monkeypatch.setattr(ablate, "make_run_executor", lambda *a, **k: FailOne(RayExecutor(), "fix:latent_init"))
    out = tmp_path / "ab"
    r = runner.invoke(app, [*ABLATE, "--out", str(out), "--executor", "ray"])
    assert r.exit_code == 4, r.output
    assert "ablation incomplete: 1 run(s) failed (fix:latent_init)" in r.stderr
    summary = json.loads((out / "summary.json").read_text())
    ab = summary["ablation"]
    assert not ab["complete"] and ab["failed_runs"] == {"fix:latent_init": "ValueError: three is not allowed second "
                                                                           "line"}
    verdicts = {h["id"]: h["verdict"] for h in summary["hypotheses"]}
    assert verdicts["latent_init"] == "failed" and verdicts["lr_too_high"] == "confirmed"
    assert {r["name"] for r in summary["runs"]} == {"baseline", "fix:lr_too_high", "all fixes"}
    report = (out / "report.md").read_text()
    assert "**Incomplete: run `fix:latent_init` failed** — ValueError: three is not allowed" in report


def test_failed_baseline_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    from diagnose.cli.commands import ablate

    monkeypatch.setattr(ablate, "make_run_executor", lambda *a, **k: FailOne(SerialExecutor(), "baseline"))
    out = tmp_path / "ab"
    r = runner.invoke(app, [*ABLATE, "--out", str(out)])
    assert r.exit_code == 4
    assert r.stderr.strip() == ("error: the baseline run failed: ValueError: three is not allowed second line; "
                                "nothing written")
    assert not out.exists()


def test_missing_ray_is_one_line_exit_2(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    r = runner.invoke(app, [*ABLATE, "--out", str(tmp_path / "ab"), "--executor", "ray"])
    assert r.exit_code == 2
    assert r.stderr.strip() == ("error: --executor ray needs `ray`, which is not installed: pip install "
                                "'alignment-diagnose[ray]'")
    assert not (tmp_path / "ab").exists()


@pytest.mark.parametrize("args, message", [
    (["--executor", "slurm"], "--executor 'slurm': expected one of local, ray"),
    (["--ray-address", "auto"], "--ray-address/--gpus-per-run: only with --executor ray"),
    (["--executor", "ray", "--gpus-per-run", "1"], "--gpus-per-run 1 with --device cpu: pass --device cuda"),
])
def test_bad_executor_options_are_exit_2(tmp_path, args, message):
    r = runner.invoke(app, [*ABLATE, "--out", str(tmp_path / "ab"), *args])
    assert r.exit_code == 2
    assert message in r.stderr


COMPARE = ["compare", "perceiver", "direct", "--scale", "tiny", "--steps", "12", "--quiet", "--seeds", "1", "--set",
           "dataset.num_train=256",
           "--set", "dataset.num_val=32", "--set", "dataset.batch_size=16"]


def test_compare_on_ray_reports_both_runs_as_in_process(ray_instance, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "ray"
    r1 = runner.invoke(app, [*COMPARE, "--out", str(local), "--workers", "2"])
    threads = RUN_THREADS
    r2 = runner.invoke(app, [*COMPARE, "--out", str(remote), "--executor", "ray", "--cpus-per-run", str(threads)])
    assert r1.exit_code == r2.exit_code and r1.exit_code in (0, 1), r1.output + r2.output
    a, b = (json.loads((d / "summary.json").read_text()) for d in (local, remote))
    assert [r["name"] for r in a["runs"]] == [r["name"] for r in b["runs"]] == ["perceiver_mrl_alignment",
                                                                                "pixmo_alignment"]
    for ra, rb in zip(a["runs"], b["runs"]):
        assert ra["final_loss"] == rb["final_loss"] and ra["root_causes"] == rb["root_causes"]
    assert [f["id"] for f in a["findings"]] == [f["id"] for f in b["findings"]]


def test_compare_with_a_failed_side_writes_nothing(tmp_path, monkeypatch):
    from diagnose.cli.commands import instrumented

    monkeypatch.setattr(instrumented, "make_run_executor", lambda *a, **k: FailOne(SerialExecutor(), "pixmo_alignment"))
    r = runner.invoke(app, [*COMPARE, "--out", str(tmp_path / "c"), "--workers", "2"])
    assert r.exit_code == 4
    assert r.stderr.strip() == ("error: run pixmo_alignment failed: ValueError: three is not allowed second line; "
                                "nothing written")
    assert not (tmp_path / "c").exists()


def nap(seconds: float, marker: str | None = None) -> float:
    import pathlib
    import time

    time.sleep(seconds)
    if marker:
        pathlib.Path(marker).touch()
    return seconds


def test_ctrl_c_cancels_the_outstanding_ray_tasks(ray_instance, tmp_path):
    import time

    from diagnose.lab.executors import RayExecutor

    def interrupt(name, result):
        raise KeyboardInterrupt

    marker = tmp_path / "long task finished"
    with RayExecutor() as ex:
        # both run at once (2 CPUs); the quick one's completion is the "Ctrl-C" (the long one sleeps long enough for
        # a loaded machine to start the quick one's worker: 4 s were not, once, beside a benchmark run)
        with pytest.raises(KeyboardInterrupt):
            ex.run([Job("quick", nap, (0.0,)), Job("long", nap, (10.0, str(marker)))], on_done=interrupt)
        time.sleep(12.0)
        assert not marker.exists()  # cancelled: it never got to the end of its sleep
        assert ex.run([Job("after", nap, (0.0,))]) == {"after": 0.0}  # the executor is still usable


def test_ctrl_c_stops_the_local_workers(tmp_path):
    import time

    def interrupt(name, result):
        raise KeyboardInterrupt

    marker = tmp_path / "long job finished"
    start = time.perf_counter()
    with LocalExecutor(2) as ex:
        with pytest.raises(KeyboardInterrupt):
            ex.run([Job("quick", nap, (0.0,)), Job("long", nap, (20.0, str(marker)))], on_done=interrupt)
    assert time.perf_counter() - start < 15  # not waiting for the long job
    time.sleep(1.0)
    assert not marker.exists()


def _threads_of_a_run(_: int) -> tuple[int, int]:
    import torch

    from diagnose.lab.runs import pinned_threads

    with pinned_threads() as n:
        return n, torch.get_num_threads()


def test_a_run_pins_its_torch_threads_whatever_the_process_had():
    """The reference runs' numbers depend on the thread count, so it never follows the machine: RUN_THREADS in
    this process and in local workers, the executor's count inside a job (Ray's --cpus-per-run), and the
    process gets its own count back."""
    import torch

    from diagnose.lab.executors import call_with_threads

    before = torch.get_num_threads()
    torch.set_num_threads(RUN_THREADS + 1)
    try:
        assert _threads_of_a_run(0) == (RUN_THREADS, RUN_THREADS)
        assert torch.get_num_threads() == RUN_THREADS + 1
        assert call_with_threads(_threads_of_a_run, (0,), 2) == (2, 2)  # a job that asked for 2 CPUs
        with LocalExecutor(2) as ex:
            results = ex.run([Job(f"j{i}", _threads_of_a_run, (i,)) for i in range(2)])
        assert list(results.values()) == [(RUN_THREADS, RUN_THREADS)] * 2
        assert torch.get_num_threads() == RUN_THREADS + 1
    finally:
        torch.set_num_threads(before)
