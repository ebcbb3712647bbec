"""The `images` source on hostile captions and files: one line, exit 2, nothing cached."""

import csv
import os

import pytest
from PIL import Image


def _dataset(root, n=8):
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        Image.new("RGB", (36, 36), (10 * i, 100, 200)).save(root / f"img{i}.png")
        rows.append({"image": f"img{i}.png", "caption": f"colour {10 * i}"})
    _write(root, rows)
    return rows


def _write(root, rows):
    with (root / "captions.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "caption"])
        w.writeheader()
        w.writerows(rows)


def _args(root, *extra):
    return ["train", "--config", "images_tiny_example.yaml", "--scale", "full", "--steps", "1", "--quiet",
            "--set", f"dataset.images.root={root}", "--set", f"dataset.images.captions={root / 'captions.csv'}", *extra]


@pytest.mark.parametrize("case, message", [
    ("parent_path", "resolves outside dataset.images.root"),
    ("absolute_path", "is absolute"),
    ("symlink_out", "resolves outside dataset.images.root"),
    ("not_an_image", "unreadable image"),
    ("truncated_png", "unreadable image"),
    ("bomb", "decompression-bomb limit"),
    ("cache_dir_is_file", "dataset.images.cache_dir"),
    ("vision_layer", "'dataset.images.vision_layer' = 99"),
])
def test_images_bad_input(cli, tmp_path, monkeypatch, case, message):
    root = tmp_path / "data"
    rows = _dataset(root)
    extra = []
    outside = tmp_path / "secret.png"
    Image.new("RGB", (36, 36)).save(outside)
    if case == "parent_path":
        rows[2]["image"] = "../secret.png"
    elif case == "absolute_path":
        rows[2]["image"] = str(outside)
    elif case == "symlink_out":
        os.symlink(outside, root / "link.png")
        rows[2]["image"] = "link.png"
    elif case == "not_an_image":
        (root / "img3.png").write_text("hello")
    elif case == "truncated_png":
        data = (root / "img3.png").read_bytes()
        (root / "img3.png").write_bytes(data[: len(data) // 2])
    elif case == "bomb":
        from PIL import Image as PILImage

        Image.new("RGB", (400, 400)).save(root / "img3.png")
        monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100 * 100)  # the same check Pillow applies at 89 Mpx
    elif case == "cache_dir_is_file":
        (tmp_path / "cachefile").write_text("x")
        extra = ["--set", f"dataset.images.cache_dir={tmp_path / 'cachefile'}"]
    else:
        extra = ["--set", "dataset.images.vision_layer=99"]
    _write(root, rows)
    cli.bad(_args(root, *extra), contains=message)
    cache = root / ".diagnose-cache"
    assert not cache.exists() or not any(cache.iterdir())
