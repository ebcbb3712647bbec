"""The layers of `diagnose`, imports only downward: core <- engine (and integrations) <- lab <- cli.

- core: no torch, no `reference_models`, no `probes`;
- engine and `diagnose.integrations`: core, probes, reports, torch; never `reference_models`;
- lab: the only code that imports `reference_models`;
- cli: everything. The package itself (`diagnose/__init__.py`, public and lazy) and `python -m diagnose`
  sit on top.

Every import counts, at module level and inside functions; there is no list of allowed exceptions.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "diagnose"
RANK = {"core": 0, "engine": 1, "integrations": 1, "lab": 2, "cli": 3, "api": 4}
# what each layer may import outside `diagnose` (of the project's own packages and torch)
FORBIDDEN = {
    "core": {"torch", "reference_models", "probes"},
    "engine": {"reference_models"},
    "integrations": {"reference_models"},
}
OWN = ("reports", "probes", "reference_models")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    return "api" if len(parts) == 1 or parts[1] == "__main__" else parts[1]


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) of every import statement of `path`. A name imported
    from a package is counted as its submodule when there is one (`from . import csvlog`)."""
    known = modules()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package[: len(package) - child.level + 1] + ([base] if base else []))
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    out.append((sub if sub in known else base, child.lineno, top))
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), True)
    return out


def test_imports_go_only_downward():
    bad = []
    for module, path in modules().items():
        mine = layer(module)
        for target, line, _ in imports(module, path):
            top = target.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line}: {module} ({mine}) imports {target}"
            if top == "diagnose":
                theirs = layer(target)
                if theirs not in RANK:
                    bad.append(f"{where}: unknown layer {theirs!r}")
                elif RANK[theirs] > RANK[mine]:
                    bad.append(f"{where} ({theirs}): upward")
            elif top in FORBIDDEN.get(mine, ()):
                bad.append(f"{where}: {mine} may not import {top}")
    assert not bad, "\n".join(bad)


def test_every_module_has_a_layer():
    assert {layer(m) for m in modules()} <= set(RANK)


def test_no_module_level_import_cycles():
    known = modules()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        deps = set()
        for target, _, top in imports(module, path):
            if not top or not target.startswith("diagnose"):
                continue
            # importing a.b.c runs a/__init__, a/b/__init__ and a/b/c
            parts = target.split(".")
            deps |= {".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in known}
        # a package's modules run their parents' __init__ first; that edge is not a cycle of ours
        graph[module] = {d for d in deps if d != module and not module.startswith(d + ".")}
    cycles, state = [], {}

    def dfs(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                dfs(dep, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node, [])
    assert not cycles, "\n".join(cycles)


def test_probes_reports_and_reference_models_never_import_diagnose():
    bad = []
    for package in OWN:
        for path in sorted((ROOT / package).rglob("*.py")):
            for target, line, _ in imports(module_name(path), path):
                if target.split(".")[0] == "diagnose":
                    bad.append(f"{path.relative_to(ROOT)}:{line}: imports {target}")
    assert not bad, "\n".join(bad)


def _loaded_after(code: str, modules: tuple[str, ...] = ("torch", "reference_models")) -> list[str]:
    probe = f"import sys; {code}; print(' '.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.parametrize("code", [
    "import diagnose.core, diagnose.core.rules",
    "import diagnose.core.summary, diagnose.core.logs, diagnose.core.lint, diagnose.core.logs.diagnosis",
    "import diagnose.engine.rule_server, diagnose.engine.monitor",  # the rule process's import path
    "import diagnose",
])
def test_light_imports_load_no_torch(code):
    assert _loaded_after(code) == []


def test_cli_loads_no_torch_until_a_command_trains():
    assert _loaded_after("import diagnose.cli, diagnose.cli.app") == []
    # running the commands that do not train: --help, lint (and logs, report: the same imports)
    source = ROOT / "reference_models" / "perceiver.py"
    run = ("from typer.testing import CliRunner; from diagnose.cli import app; r = CliRunner(); "
           f"[r.invoke(app, a) for a in (['--help'], ['lint', {str(source)!r}], ['logs', '--help'], "
           "['report', '--help'])]")
    assert _loaded_after(run) == []


def _run_dir(out: Path) -> None:
    """A small run directory (records + summary), written the way a watch writes one, plots deferred."""
    import math

    import pandas as pd

    from diagnose.core.summary import RunSummary, Summary
    from diagnose.engine.rundir import write_run_dir

    rows = [{"run": "r", "step": s, "probe": "loss_split", "target": "loss_clip", "metric": "value",
             "value": math.log(16) * (1 - s / 40)} for s in range(20)]
    run = RunSummary(name="r", kind="watch", steps=20, batch_size=16, candidates=16, chance_loss=math.log(16),
                     final_loss={"loss_clip": rows[-1]["value"]}, final_window_steps=[16, 19])
    write_run_dir(out, Summary([run]), pd.DataFrame(rows), plots="deferred")


def test_commands_that_do_not_train_run_without_torch(tmp_path):
    """`--help` loads neither torch nor pandas nor matplotlib; `logs`, `report` and `lint`, run to their
    end on real inputs (exit 0 or 1: findings), load no torch."""
    assert _loaded_after("from typer.testing import CliRunner; from diagnose.cli import app; "
                         "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output",
                         ("torch", "reference_models", "pandas", "matplotlib")) == []
    log = tmp_path / "metrics.csv"
    log.write_text("step,train_loss\n" + "".join(f"{s},{2.77 - 0.01 * s}\n" for s in range(30)))
    _run_dir(tmp_path / "run")
    source = ROOT / "reference_models" / "perceiver.py"
    commands = [["logs", str(log), "--batch-size", "16", "--out", str(tmp_path / "logs")],
                ["report", str(tmp_path / "run")], ["lint", str(source)]]
    run = ("from typer.testing import CliRunner; from diagnose.cli import app; "
           f"rs = [CliRunner().invoke(app, a) for a in {commands!r}]; "
           "assert all(r.exit_code in (0, 1) for r in rs), [r.output for r in rs]")
    assert _loaded_after(run) == []
    assert (tmp_path / "logs" / "report.md").is_file() and (tmp_path / "run" / "losses.png").is_file()


def test_cli_declares_the_log_formats_of_the_readers():
    from diagnose.cli.commands import logs as logs_cmd
    from diagnose.core.logs import FORMATS

    assert logs_cmd.FORMATS == FORMATS  # the CLI's copy (declared without importing the readers)


def test_checkpoint_loads_torch_only_for_a_torch_file(tmp_path):
    """A safetensors checkpoint is read with numpy; a .pt file (and a bfloat16 safetensors file, which numpy
    cannot hold) needs torch. The statistics agree either way."""
    import numpy as np
    import torch
    from safetensors.numpy import save_file
    from safetensors.torch import save_file as save_torch

    rng = np.random.default_rng(0)
    weights = {"vision.latents": rng.standard_normal((8, 16)).astype(np.float32),
               "proj.weight": rng.standard_normal((4, 4)).astype(np.float32)}
    save_file(weights, str(tmp_path / "w.safetensors"))
    torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, tmp_path / "w.pt")
    save_torch({k: torch.from_numpy(v).bfloat16() for k, v in weights.items()}, str(tmp_path / "bf.safetensors"))
    loaded = {}
    for name in ("w.safetensors", "w.pt", "bf.safetensors"):
        out = tmp_path / f"out-{name}"
        run = ("from typer.testing import CliRunner; from diagnose.cli.app import app; "
               f"r = CliRunner().invoke(app, ['checkpoint', {str(tmp_path / name)!r}, '--out', {str(out)!r}]); "
               "assert r.exit_code == 0, r.output")
        loaded[name] = _loaded_after(run)
        summary = json.loads((out / "summary.json").read_text())["checkpoint"]
        loaded[name + ":stats"] = {t["name"]: (t["dtype"], t["rms"]) for t in summary["tensor_stats"]}
    assert loaded["w.safetensors"] == [] and "torch" in loaded["w.pt"] and "torch" in loaded["bf.safetensors"]
    assert loaded["w.safetensors:stats"] == loaded["w.pt:stats"]
    bf = loaded["bf.safetensors:stats"]
    assert {k: d for k, (d, _) in bf.items()} == {"vision.latents": "bfloat16", "proj.weight": "bfloat16"}
    for k, (_, rms) in bf.items():  # bfloat16 keeps ~3 significant digits
        assert rms == pytest.approx(loaded["w.pt:stats"][k][1], rel=1e-2)
