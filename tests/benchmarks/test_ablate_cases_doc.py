"""docs/ablate-cases.md (every real-fault case's latest verdicts under `diagnose ablate --`) is what the saved
results say: regenerate it with `python benchmarks/real_faults/ablate.py --render all --write-doc`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ABLATE = Path(__file__).resolve().parents[2] / "benchmarks" / "real_faults" / "ablate.py"


def test_the_checked_in_case_table_is_current():
    spec = importlib.util.spec_from_file_location("real_faults_ablate", ABLATE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.CASES_DOC.read_text() == mod.cases_doc(), \
        "docs/ablate-cases.md: python benchmarks/real_faults/ablate.py --render all --write-doc"
    assert "| all | " in mod.CASES_DOC.read_text()
