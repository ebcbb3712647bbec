"""Reference training loop and retrieval evaluation.

The loop does no I/O: progress, checkpoints and probes are callbacks (`TrainCallback`), so the CLI
owns the console and every file it writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import torch

from .config import AlignmentConfig
from .data import PairSource, build_data
from .distributed import gradient_scale, world
from .losses import AlignmentLoss, LossOutput
from .model import AlignmentModel, build_model


@dataclass
class StepInfo:
    step: int  # 0-based optimizer step
    epoch: int
    lr: float
    batch_size: int
    loss: LossOutput
    image: torch.Tensor  # (B, proj) unit-norm embeddings of this batch (with grad history)
    text: torch.Tensor
    tokens: torch.Tensor  # (B, T, D) input features
    text_features: torch.Tensor  # (B, Dt)


class TrainCallback(Protocol):
    def on_backward(self, model: AlignmentModel, info: StepInfo) -> None: ...
    def on_step_end(self, model: AlignmentModel, info: StepInfo) -> None: ...
    def on_epoch_end(self, model: AlignmentModel, epoch: int, step: int) -> None: ...


class Callback:
    """No-op base; override what you need."""

    def on_backward(self, model, info):
        pass

    def on_step_end(self, model, info):
        pass

    def on_epoch_end(self, model, epoch, step):
        pass


@dataclass
class TrainResult:
    model: AlignmentModel
    history: list[dict[str, float]]  # one row per step: step, epoch, lr, logged loss components
    retrieval: dict[str, float]
    steps: int
    steps_per_epoch: int
    chance_loss: float
    optimizer: torch.optim.Optimizer | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def param_groups(model: torch.nn.Module, cfg: AlignmentConfig) -> list[dict]:
    """open_clip: no decay on gains, biases and the temperature (anything with fewer than 2 dims).

    Weight matrices (Linear weights) get `matrix_lr_multiplier` (see schema.py); their decay is
    divided by it so that AdamW's per-step shrinkage lr * wd stays what the config asks for.
    """
    opt = cfg.optimization
    mult = opt.matrix_lr_multiplier
    matrices, other_decay, no_decay = [], [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(module, torch.nn.Linear) and name == "weight":
                matrices.append(p)
            elif p.ndim < 2:
                no_decay.append(p)
            else:  # e.g. Perceiver latents: input-like, configured lr
                other_decay.append(p)
    groups = [
        {"params": matrices, "weight_decay": opt.weight_decay / mult, "lr_mult": mult},
        {"params": other_decay, "weight_decay": opt.weight_decay, "lr_mult": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_mult": 1.0},
    ]
    return [g for g in groups if g["params"]]


class ShuffledCaptions:
    """Fault injection (`dataset.shuffle_captions`): sample i's tokens with sample perm[i]'s caption."""

    def __init__(self, source: PairSource, seed: int):
        self.source, self.num_samples = source, source.num_samples
        self.perm = torch.randperm(source.num_samples, generator=torch.Generator().manual_seed(seed + 7))

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, _ = self.source.batch(index)
        return tokens, self.source.batch(self.perm[index])[1]


def lr_at(step: int, total: int, cfg: AlignmentConfig) -> float:
    opt = cfg.optimization
    if opt.warmup_steps and step < opt.warmup_steps:
        return opt.lr * (step + 1) / opt.warmup_steps
    if opt.schedule == "constant":
        return opt.lr
    progress = (step - opt.warmup_steps) / max(1, total - opt.warmup_steps)
    if opt.schedule == "linear":
        return opt.lr * (1 - progress)
    return 0.5 * opt.lr * (1 + math.cos(math.pi * progress))


def steps_per_epoch(cfg: AlignmentConfig, train: PairSource) -> int:
    """Under torchrun `dataset.batch_size` is per rank (open_clip): a step consumes batch x world pairs."""
    size = world()[1]
    if train.num_samples < cfg.dataset.batch_size * size:  # batches() would never yield a full batch
        from .config import ConfigError

        ranks = f" x {size} ranks" if size > 1 else ""
        raise ConfigError(f"key 'dataset.batch_size' = {cfg.dataset.batch_size}{ranks}: larger than the "
                          f"{train.num_samples} training pairs of the data set (no full batch to train on)")
    return train.num_samples // (cfg.dataset.batch_size * size)


def batches(train: PairSource, batch_size: int, seed: int, start_epoch: int = 0):
    """(epoch, indices) forever: a fresh seeded permutation each epoch, last partial batch dropped."""
    epoch = start_epoch
    while True:
        perm = torch.randperm(train.num_samples, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        for i in range(train.num_samples // batch_size):
            yield epoch, perm[i * batch_size : (i + 1) * batch_size]
        epoch += 1


@torch.no_grad()
def embed(model: AlignmentModel, source: PairSource, batch_size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    was_training = model.training
    model.eval()
    imgs, txts = [], []
    for start in range(0, source.num_samples, batch_size):
        idx = torch.arange(start, min(start + batch_size, source.num_samples))
        tokens, text = source.batch(idx)
        imgs.append(model.encode_image(tokens.to(device)).float().cpu())
        txts.append(model.encode_text(text.to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(imgs), torch.cat(txts)


def recall_at_k(sim: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """sim (N, N), true match on the diagonal; rank = number of candidates scored strictly higher.

    Any non-finite similarity gives NaN: `nan > x` is False, so ranking NaN scores would put every
    positive first and report R@K = 1.0 for a diverged model.
    """
    if not bool(torch.isfinite(sim).all()):
        return {k: float("nan") for k in ks}
    true = sim.diagonal().unsqueeze(1)
    rank = (sim > true).sum(dim=1)
    return {k: float((rank < k).float().mean()) for k in ks}


def mean_offdiag_cosine(x: torch.Tensor) -> float:
    x = torch.nn.functional.normalize(x, dim=-1)
    n = x.shape[0]
    if n < 2:
        return float("nan")
    s = x.sum(dim=0)
    return float((s @ s - (x * x).sum()) / (n * (n - 1)))


def evaluate_retrieval(model: AlignmentModel, val: PairSource, batch_size: int,
                       device: str = "cpu") -> dict[str, float]:
    """R@1/5/10 both directions on the held-out split, chance K/N beside them (NaN, with the count
    of non-finite embedding rows, when the model produces NaN/Inf)."""
    img, txt = embed(model, val, batch_size, device)
    sim = img @ txt.t()
    n = sim.shape[0]
    i2t, t2i = recall_at_k(sim), recall_at_k(sim.t())
    bad = int((~torch.isfinite(img)).any(dim=1).sum() + (~torch.isfinite(txt)).any(dim=1).sum())
    out: dict[str, float] = {"num_candidates": float(n), "nonfinite_embeddings": float(bad)}
    for k in (1, 5, 10):
        out[f"i2t_r@{k}"] = i2t[k]
        out[f"t2i_r@{k}"] = t2i[k]
        out[f"r@{k}"] = 0.5 * (i2t[k] + t2i[k])
        out[f"chance@{k}"] = min(1.0, k / n)
    out["image_mean_cosine"] = mean_offdiag_cosine(img)
    out["text_mean_cosine"] = mean_offdiag_cosine(txt)
    out["pair_cosine"] = float((img * txt).sum(dim=1).mean())
    return out


def make_optimizer(model: AlignmentModel, cfg: AlignmentConfig) -> torch.optim.AdamW:
    opt = cfg.optimization
    return torch.optim.AdamW(param_groups(model, cfg), lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps)


def train(
    cfg: AlignmentConfig,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    device: str = "cpu",
    callbacks: Sequence[Callback] = (),
    model: AlignmentModel | None = None,
    data: tuple[PairSource, PairSource] | None = None,
    evaluate: bool = True,
) -> TrainResult:
    """Train the reference model for `steps` optimizer steps (or `epochs`, default: the config's)."""
    # over 60 lines: the training loop in one place, so the order of a step (forward, loss, backward,
    # callbacks, optimizer step, schedule) that every callback relies on reads top to bottom
    seed = cfg.seed if seed is None else seed
    rank, size = world()
    torch.manual_seed(seed + rank)  # per rank; DDP broadcasts rank 0's initial weights to every rank
    train_src, val_src = data if data is not None else build_data(cfg, seed)
    if cfg.dataset.shuffle_captions:  # fault injection: misaligned training pairs
        train_src = ShuffledCaptions(train_src, seed)
    if model is None:
        model = build_model(cfg)
    model.to(device).train()
    B = cfg.dataset.batch_size
    per_epoch = steps_per_epoch(cfg, train_src)
    planned = per_epoch * (epochs if epochs is not None else cfg.optimization.epochs)
    total = steps if steps is not None else planned
    # the lr schedule spans the configured training, so a short diagnostic run sees the lr that the
    # first `steps` steps of the real run see (not a schedule squeezed into the diagnostic window)
    horizon = max(planned, total)
    optimizer = make_optimizer(model, cfg)
    criterion = AlignmentLoss(cfg.losses)
    # the same on every rank: a sampled MRL dim that differed would gather tensors of different widths
    mrl_gen = torch.Generator().manual_seed(seed + 1)
    history: list[dict[str, float]] = []
    net = _ddp(model, device) if size > 1 else model
    # one permutation on every rank, each rank taking its own B rows (DistributedSampler semantics)
    stream = batches(train_src, B * size, seed)
    for step in range(total):
        epoch, idx = next(stream)
        idx = idx[rank * B:(rank + 1) * B]
        lr = lr_at(step, horizon, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        tokens, text = train_src.batch(idx)
        tokens, text = tokens.to(device), text.to(device)
        out = net(tokens, text)
        loss = criterion(out["image"], out["text"], out["logit_scale"], mrl_gen)
        if size > 1 and cfg.losses.gather_features and step % GRAD_SCALE_EVERY == 0:
            ls = cfg.losses
            loss.distributed = gradient_scale(out["image"], out["text"], out["logit_scale"], gather=True,
                                              with_grad=ls.gather_with_grad, local=ls.local_loss)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        info = StepInfo(step, epoch, lr, B, loss, out["image"], out["text"], tokens, text)
        for cb in callbacks:
            cb.on_backward(model, info)
        if cfg.optimization.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optimization.grad_clip)
        optimizer.step()
        model.clamp_logit_scale()
        row = {"step": float(step), "epoch": float(epoch), "lr": lr, **loss.logged,
               "logit_scale": float(model.logit_scale.detach().exp()), "chance": loss.chance,
               "candidates": float(loss.candidates)}
        history.append(row)
        for cb in callbacks:
            cb.on_step_end(model, info)
        if (step + 1) % per_epoch == 0:
            for cb in callbacks:
                cb.on_epoch_end(model, epoch, step)
        if any(getattr(cb, "stop_training", False) for cb in callbacks):  # a callback decided the run is settled
            break
    retrieval = evaluate_retrieval(model, val_src, B, device) if evaluate else {}
    candidates = int(history[-1]["candidates"]) if history else B
    return TrainResult(model, history, retrieval, len(history), per_epoch, math.log(candidates), optimizer,
                       extra={"candidates": candidates, "world_size": size, "rank": rank})


GRAD_SCALE_EVERY = 10  # steps between gradient-scale checks of a gathered loss (two small autograd passes)


def _ddp(model: AlignmentModel, device: str) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    ids = [torch.device(device).index or 0] if device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids)
