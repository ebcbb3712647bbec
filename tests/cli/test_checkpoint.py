"""`diagnose checkpoint`: safe loading, clear errors, stats, latents, --against, --config."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from diagnose.cli import app
from reference_models import apply_scale, build_model, load_config

runner = CliRunner()
TRAIN = ["train", "--config", "direct", "--scale", "tiny", "--steps", "3", "--set", "dataset.num_train=32",
         "--set", "dataset.num_val=16", "--set", "dataset.batch_size=16", "--quiet"]


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _one_error_line(result, *needles):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": _Payload(marker)}, evil)
    assert not marker.exists()
    line = _one_error_line(runner.invoke(app, ["checkpoint", str(evil)]), "refused", "nothing was executed")
    assert "open" in line  # names the global it refused
    assert not marker.exists()


@pytest.mark.parametrize("kind",
                         ["empty", "truncated_pt", "truncated_safetensors", "garbage", "missing", "no_weights_dir"])
def test_bad_files_give_one_clear_line_and_exit_2(tmp_path, kind):
    state = {"a.weight": torch.randn(8, 8), "a.bias": torch.zeros(8)}
    if kind == "empty":
        path = tmp_path / "empty.pt"
        path.write_bytes(b"")
        needle = "empty"
    elif kind == "truncated_pt":
        full = tmp_path / "full.pt"
        torch.save(state, full)
        path = tmp_path / "cut.pt"
        path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
        needle = "corrupt, truncated"
    elif kind == "truncated_safetensors":
        full = tmp_path / "full.safetensors"
        save_file(state, str(full))
        path = tmp_path / "cut.safetensors"
        path.write_bytes(full.read_bytes()[:100])
        needle = "corrupt, truncated"
    elif kind == "garbage":
        path = tmp_path / "noise.bin"
        path.write_bytes(bytes(range(256)) * 4)
        needle = "corrupt, truncated"
    elif kind == "missing":
        path, needle = tmp_path / "nope.pt", "not found"
    else:
        path = tmp_path / "hf"
        path.mkdir()
        (path / "config.json").write_text("{}")
        needle = "no model weights"
    _one_error_line(runner.invoke(app, ["checkpoint", str(path)]), str(path), needle)


def _tiny_perceiver_state(**sets):
    cfg = apply_scale(load_config("perceiver", [f"{k}={v}" for k, v in sets.items()]), "tiny")
    return build_model(cfg).state_dict()


def test_formats_wrappers_and_hf_directory_agree(tmp_path):
    state = _tiny_perceiver_state()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": state, "epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "train.pth")
    torch.save({"model": state}, tmp_path / "wrapped.bin")
    hf = tmp_path / "hf_model"
    hf.mkdir()
    torch.save(state, hf / "pytorch_model.bin")
    outs = []
    for p in ("w.safetensors", "train.pth", "wrapped.bin", "hf_model"):
        out = tmp_path / f"out-{p}"
        r = runner.invoke(app, ["checkpoint", str(tmp_path / p), "--out", str(out)])
        assert r.exit_code == 0, r.output
        s = json.loads((out / "summary.json").read_text())
        assert {"runs", "findings", "hypotheses"} <= set(s)
        outs.append({row["layer"]: row["norm"] for row in s["checkpoint"]["layers"]})
        assert (out / "report.md").is_file()
    assert all(o == outs[0] for o in outs)
    assert "vision.perceiver.layers.0.cross_attn.to_q" in outs[0]


def test_latents_characterised_and_constant_latents_are_an_error(tmp_path):
    path = tmp_path / "seedinit.safetensors"
    save_file({k: v.contiguous() for k, v in _tiny_perceiver_state().items()}, str(path))
    r = runner.invoke(app, ["checkpoint", str(path), "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    (lat,) = s["checkpoint"]["latents"]
    assert lat["name"] == "vision.perceiver.latents"
    assert lat["std"] == pytest.approx(0.02, rel=0.25)  # the seed's effective init
    assert lat["identical_rows"] == 0 and abs(lat["cosine_mean"]) < 0.5

    zeros = tmp_path / "zeros.safetensors"
    state = _tiny_perceiver_state(**{"vision_encoder.perceiver_latent_init": "zeros"})
    save_file({k: v.contiguous() for k, v in state.items()}, str(zeros))
    r = runner.invoke(app, ["checkpoint", str(zeros), "--out", str(tmp_path / "z")])
    assert r.exit_code == 1, r.output
    f = json.loads((tmp_path / "z" / "summary.json").read_text())["findings"]
    sym = [x for x in f if x["id"] == "latents_symmetric"]
    assert sym and sym[0]["severity"] == "error" and sym[0]["target"] == "vision.perceiver.latents"
    assert {"id", "severity", "run", "evidence", "message"} <= set(sym[0])


def test_nonfinite_values_are_reported(tmp_path):
    state = {"a.weight": torch.randn(4, 4), "b.weight": torch.randn(4, 4)}
    state["b.weight"][1, 2] = float("nan")
    state["b.weight"][0, 0] = float("inf")
    save_file(state, str(tmp_path / "nan.safetensors"))
    r = runner.invoke(app, ["checkpoint", str(tmp_path / "nan.safetensors"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1
    findings = json.loads((tmp_path / "o" / "summary.json").read_text())["findings"]
    f = [x for x in findings if x["id"] == "nonfinite_weights"]
    bad = f[0]["evidence"]["tensors"][0]
    assert f[0]["target"] == "b.weight" and bad["nan"] == 1 and bad["inf"] == 1


def test_against_a_real_short_run_names_the_layers_that_changed_least(tmp_path):
    run = tmp_path / "run"
    r = runner.invoke(app, [*TRAIN, "--out", str(run)])
    assert r.exit_code == 0, r.output
    early, late = run / "checkpoint-epoch1.safetensors", run / "model.safetensors"  # step 2 vs step 3
    r = runner.invoke(app, ["checkpoint", str(late), "--against", str(early), "--config", "direct", "--scale", "tiny",
                            "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    # independent computation of the per-layer relative change
    a, b = load_file(str(late)), load_file(str(early))
    layers = {}
    for k in a:
        layer = k.rsplit(".", 1)[0] if k.endswith((".weight", ".bias")) else k
        d, n = layers.get(layer, (0.0, 0.0))
        layers[layer] = (d + float((a[k] - b[k]).double().pow(2).sum()), n + float(b[k].double().pow(2).sum()))
    expected = sorted(layers, key=lambda name: (layers[name][0] / layers[name][1]) ** 0.5)
    least = next(f for f in s["findings"] if f["id"] == "layers_changed_least")
    assert [x["layer"] for x in least["evidence"]["least"]] == expected[:3]
    assert least["target"] == expected[0]
    for name in expected[:3]:
        assert name in least["message"] and name in r.stdout
    assert any(f["id"] == "config_match" for f in s["findings"])
    assert (tmp_path / "cmp" / "layer_change.png").is_file()


def test_frozen_layer_is_named_as_never_learned(tmp_path):
    base = {"enc.weight": torch.randn(16, 16), "enc.bias": torch.randn(16), "head.weight": torch.randn(4, 16)}
    moved = {k: v.clone() for k, v in base.items()}
    moved["enc.weight"] += 0.05 * torch.randn(16, 16)
    moved["enc.bias"] += 0.05
    save_file(base, str(tmp_path / "b.safetensors"))
    save_file(moved, str(tmp_path / "m.safetensors"))
    r = runner.invoke(app, ["checkpoint", str(tmp_path / "m.safetensors"), "--against", str(tmp_path / "b.safetensors"),
                            "--fail-on", "warning"])
    assert r.exit_code == 1
    assert "layers_unchanged" in r.stdout and "head" in r.stdout


def test_config_mismatch_names_the_matching_scale(tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in _tiny_perceiver_state().items()}, str(path))
    r = runner.invoke(app, ["checkpoint", str(path), "--config", "perceiver", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1
    findings = json.loads((tmp_path / "o" / "summary.json").read_text())["findings"]
    f = [x for x in findings if x["id"] == "config_mismatch"][0]
    assert f["severity"] == "error" and "--scale tiny" in f["message"]
    r = runner.invoke(app, ["checkpoint", str(path), "--config", "direct", "--scale", "tiny"])
    assert r.exit_code == 1 and "config_mismatch" in r.stdout
    _one_error_line(runner.invoke(app, ["checkpoint", str(path), "--config", "nope"]), "unknown config 'nope'")
