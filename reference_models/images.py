"""The `images` source: an image folder + captions file, encoded by frozen local Hugging Face models.

Vision: `CLIPVisionModel` patch tokens from a chosen hidden layer (CLS kept or dropped), from a local
directory or built from a tiny `CLIPVisionConfig` with random weights (`random`). Text:
`CLIPTextModel` (pooled output) or any local `transformers` encoder with mean pooling over tokens
(the sentence-transformers convention), or a tiny random `CLIPTextModel` (`random`). Nothing is ever
downloaded: a model that is not a local directory is a `ConfigError` saying how to provide one.

This module computes; it writes nothing. Caching lives with the CLI (diagnose/lab/data_cache.py), keyed
by `cache_key`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from .config import AlignmentConfig, ConfigError

# OpenAI CLIP preprocessing constants (CLIPImageProcessor defaults)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# tiny random encoders: CPU in seconds, for tests and the bundled example config
RANDOM_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                     image_size=32, patch_size=8)
RANDOM_TEXT = dict(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=2, max_position_embeddings=64)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class Pair:
    image: Path
    caption: str


def read_captions(cfg: AlignmentConfig) -> list[Pair]:
    """CSV (header with `image`, `caption`) or JSON lines ({"image": ..., "caption": ...})."""
    ic = cfg.dataset.images
    if not ic.captions:
        raise ConfigError("dataset.images.captions is empty: expected a CSV or JSON-lines captions file")
    path, root = Path(ic.captions).expanduser(), Path(ic.root or ".").expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: captions file not found")
    if not root.is_dir():
        raise ConfigError(f"dataset.images.root: image folder not found: {root}")
    rows: list[dict] = []
    try:
        if path.suffix.lower() in (".jsonl", ".json"):
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        raise ConfigError(f"{path}:{i}: not valid JSON") from None
        else:
            with path.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    if not rows:
        raise ConfigError(f"{path}: no caption rows")
    pairs = []
    for i, row in enumerate(rows, 2 if path.suffix.lower() not in (".jsonl", ".json") else 1):
        if not isinstance(row, dict):
            raise ConfigError(f"{path}: row {i}: expected an object with 'image' and 'caption'")
        for col in ("image", "caption"):
            if not row.get(col):
                raise ConfigError(f"{path}: row {i}: missing column '{col}' (expected columns: image, caption)")
        img = _inside_root(root, str(row["image"]), f"{path}: row {i}")
        if not img.is_file():
            raise ConfigError(f"{path}: row {i}: image not found: {img}")
        pairs.append(Pair(img, str(row["caption"])))
    return pairs


def _inside_root(root: Path, name: str, where: str) -> Path:
    """A caption's image path, refused when absolute or when it resolves outside the image root
    (`..`, or a symlink pointing out): a captions file must not make the tool read arbitrary files."""
    rel = Path(name)
    if rel.is_absolute() or rel.drive:
        raise ConfigError(f"{where}: image path '{name}' is absolute; expected a path relative to dataset.images.root")
    img = root / rel
    real_root = root.resolve()
    if img.resolve() != real_root and real_root not in img.resolve().parents:
        raise ConfigError(f"{where}: image path '{name}' resolves outside dataset.images.root ({root})")
    return img


def _local_dir(spec: str, key: str) -> Path:
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"{key} '{spec}': not a local directory. Models are never downloaded: save one with "
            "`Model.from_pretrained(name).save_pretrained(DIR)` on a machine with network access and pass DIR "
            "(or use 'random' for a tiny random-weight encoder)")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise ConfigError(f"{key} '{spec}': no weights in the directory (expected one of {', '.join(WEIGHT_FILES)})")
    return path


def load_vision(cfg: AlignmentConfig):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    spec = cfg.dataset.images.vision_model
    if spec == "random":
        torch.manual_seed(cfg.seed)
        model = CLIPVisionModel(CLIPVisionConfig(**RANDOM_VISION))
    else:
        path = _local_dir(spec, "dataset.images.vision_model")
        try:
            model = CLIPVisionModel.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:  # wrong architecture, corrupt weights
            raise ConfigError(f"dataset.images.vision_model '{spec}': cannot load a CLIPVisionModel "
                              f"({str(exc).splitlines()[0][:160]})") from None
    return model.eval()


class ByteTokenizer:
    """For the random text encoder only: UTF-8 bytes + BOS/EOS, no vocabulary file needed."""

    def __call__(self, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        ids = [[256] + list(t.encode("utf-8"))[: max_length - 2] + [257] for t in texts]
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), 258, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}


def load_text(cfg: AlignmentConfig):
    """(model, tokenizer, pooling) where pooling is 'pooler' (CLIP) or 'mean'."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextConfig, CLIPTextModel

    spec = cfg.dataset.images.text_model
    if spec == "random":
        torch.manual_seed(cfg.seed + 1)
        # eos_token_id=257 makes CLIP pool at the byte tokenizer's EOS; bos 256 is its BOS (the
        # CLIP default 49406 lies outside the 260-token vocabulary and makes transformers warn on stderr)
        return (CLIPTextModel(CLIPTextConfig(**RANDOM_TEXT, bos_token_id=256, eos_token_id=257)).eval(),
                ByteTokenizer(), "pooler")
    path = _local_dir(spec, "dataset.images.text_model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        kind = AutoConfig.from_pretrained(str(path), local_files_only=True).model_type
        if kind == "clip_text_model" or kind == "clip":
            model, pooling = CLIPTextModel.from_pretrained(str(path), local_files_only=True), "pooler"
        else:
            model, pooling = AutoModel.from_pretrained(str(path), local_files_only=True), "mean"
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"dataset.images.text_model '{spec}': cannot load a text encoder "
                          f"({str(exc).splitlines()[0][:160]})") from None
    if cfg.text_encoder.pooling == "mean":
        pooling = "mean"
    return model.eval(), tokenizer, pooling


def preprocess(path: Path, size: int) -> torch.Tensor:
    """CLIP preprocessing without torchvision: shorter side to `size` (bicubic), centre crop, normalise."""
    from PIL import Image, UnidentifiedImageError

    try:
        # Pillow refuses images over 2 x MAX_IMAGE_PIXELS (DecompressionBombError) and only warns
        # between 1x and 2x; both are refused here: a caption's image must not exhaust memory
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            im = im.crop((left, top, left + size, top + size))
            x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).reshape(size, size, 3)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ConfigError(f"{path}: image larger than Pillow's decompression-bomb limit "
                          f"({Image.MAX_IMAGE_PIXELS:,} pixels); refused") from None
    except UnidentifiedImageError:
        raise ConfigError(f"{path}: unreadable image (not a format Pillow can read)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt (PIL raises all of these)
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:120]
        raise ConfigError(f"{path}: unreadable image ({first})") from None
    x = x.permute(2, 0, 1).float() / 255.0
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    return (x - mean) / std  # (3, size, size)


def _chunks(pairs: list[Pair], n: int) -> Iterator[list[Pair]]:
    for i in range(0, len(pairs), n):
        yield pairs[i : i + n]


def cache_key(cfg: AlignmentConfig, pairs: list[Pair]) -> str:
    """Changes when a model, an image file, a caption or the preprocessing changes."""
    ic = cfg.dataset.images
    h = hashlib.sha256()

    def model_id(spec: str) -> str:
        if spec == "random":
            return f"random:{cfg.seed}"
        path = _local_dir(spec,
                          "dataset.images.vision_model" if spec == ic.vision_model else "dataset.images.text_model")
        files = sorted(p for p in path.iterdir() if p.is_file())
        return spec + "|" + "|".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)

    meta = {"vision": model_id(ic.vision_model), "text": model_id(ic.text_model), "layer": ic.vision_layer,
            "keep_cls": ic.keep_cls, "pooling": cfg.text_encoder.pooling, "version": 1}
    h.update(json.dumps(meta, sort_keys=True).encode())
    for p in pairs:
        st = p.image.stat()
        h.update(f"{p.image}|{st.st_size}|{st.st_mtime_ns}|{p.caption}\n".encode())
    return h.hexdigest()[:20]


@torch.inference_mode()
def encode(cfg: AlignmentConfig, pairs: list[Pair],
           progress: Callable[[int], object] | None = None) -> dict[str, torch.Tensor]:
    """Encode in batches; only one batch of images is in memory at a time."""
    ic = cfg.dataset.images
    vision = load_vision(cfg)
    layers = vision.config.num_hidden_layers + 1  # hidden_states: the embeddings, then each layer
    if not -layers <= ic.vision_layer < layers:
        raise ConfigError(f"key 'dataset.images.vision_layer' = {ic.vision_layer}: the vision model has {layers} "
                          f"hidden states; expected {-layers}..{layers - 1}")
    text_model, tokenizer, pooling = load_text(cfg)
    size = vision.config.image_size
    max_len = getattr(text_model.config, "max_position_embeddings", 77)
    tokens_out, text_out = [], []
    for chunk in _chunks(pairs, ic.encode_batch_size):
        pixels = torch.stack([preprocess(p.image, size) for p in chunk])
        hidden = vision(pixel_values=pixels, output_hidden_states=True).hidden_states[ic.vision_layer]  # (b, 1+P, D)
        tokens_out.append(hidden if ic.keep_cls else hidden[:, 1:])
        enc = tokenizer([p.caption for p in chunk], max_length=min(max_len, 77), **(
            {} if isinstance(tokenizer, ByteTokenizer) else {"padding": True, "truncation": True,
                                                             "return_tensors": "pt"}))
        out = text_model(**{k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")})
        if pooling == "pooler" and getattr(out, "pooler_output", None) is not None:
            text_out.append(out.pooler_output)
        else:  # sentence-transformers mean pooling over non-padding tokens
            mask = enc["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)
            text_out.append((out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1))
        if progress:
            progress(len(chunk))
    return {"image_tokens": torch.cat(tokens_out).float().contiguous(),
            "text": torch.cat(text_out).float().contiguous()}
