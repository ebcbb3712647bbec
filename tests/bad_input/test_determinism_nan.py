"""Same seed -> byte-identical checkpoints and identical summaries; NaN embeddings -> NaN retrieval,
never a score, and the `nonfinite_values` finding."""

import json
import math

import torch

from .conftest import TINY


def _train(cli, out):
    result = cli(["train", "--config", "direct", *TINY, "--steps", "5", "--out", out])
    assert result.exit_code == 0, result.stderr
    return json.loads((out / "summary.json").read_text())


def test_two_identical_runs_give_byte_identical_checkpoints(cli, tmp_path):
    a, b = _train(cli, tmp_path / "a"), _train(cli, tmp_path / "b")
    for name in ("model.safetensors", "checkpoint-epoch1.safetensors", "model.yaml", "metrics.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for s in (a, b):  # wall time and the command line (it names --out) are the only differences allowed
        s.pop("command")
        s["runs"][0].pop("seconds")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_safetensors_header_is_canonical():
    """safetensors writes its metadata from a hash map (order varies even within one process)."""
    from safetensors.torch import load, save

    from diagnose.lab.checkpoint_files import canonical_safetensors

    state = {"b": torch.arange(3.0), "a": torch.ones(2, 2)}
    meta = {"config_name": "x", "scale": "tiny", "step": "3", "z": "1", "k": "2"}
    blobs = {canonical_safetensors(save(state, metadata=meta)) for _ in range(20)}
    assert len(blobs) == 1
    loaded = load(blobs.pop())
    assert torch.equal(loaded["a"], state["a"]) and torch.equal(loaded["b"], state["b"])


def test_reference_retrieval_on_nan_embeddings_is_nan():
    from reference_models.train import evaluate_retrieval

    class NanModel(torch.nn.Module):
        training = False

        def encode_image(self, tokens):
            out = torch.randn(tokens.shape[0], 8)
            out[0, 0] = float("nan")
            return out

        def encode_text(self, text):
            return torch.randn(text.shape[0], 8)

    class Pairs:
        num_samples = 16

        def batch(self, idx):
            return torch.randn(len(idx), 3, 4), torch.randn(len(idx), 5)

    r = evaluate_retrieval(NanModel(), Pairs(), batch_size=8)
    assert all(math.isnan(r[f"{d}r@{k}"]) for d in ("", "i2t_", "t2i_") for k in (1, 5, 10))
    assert r["nonfinite_embeddings"] == 2 and r["chance@1"] == 1 / 16  # row 0 of each of the 2 batches


def test_watch_retrieval_on_nan_embeddings_is_nan():
    from diagnose.engine.retrieval import retrieval_metrics

    img = torch.full((10, 4), float("nan"))
    r = retrieval_metrics(img, torch.randn(10, 4))
    assert math.isnan(r["r@1"]) and r["nonfinite_embeddings"] == 10


def test_diverged_run_reports_nan_recall_and_nonfinite_finding(cli, tmp_path):
    """The issue's reproduction (lr 1e3 without L2 normalisation overflows to NaN), on fewer held-out pairs."""
    result = cli(["gradflow", "--config", "direct", "--scale", "tiny", "--steps", "14", "--quiet",
                  "--set", "optimization.lr=1e3", "--set", "model.l2_normalize=false", "--set", "dataset.num_val=64",
                  "--out", tmp_path / "g"])
    assert result.exit_code == 1, result.stderr
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    retrieval = summary["runs"][0]["retrieval"]
    assert retrieval["r@1"] is None or math.isnan(retrieval["r@1"]), retrieval  # JSON NaN, never 1.0
    assert retrieval["nonfinite_embeddings"] > 0
    assert "nonfinite_values" in {f["id"] for f in summary["findings"]}
    assert "R@1 1.0" not in (tmp_path / "g" / "report.md").read_text()
