"""Functions run on each rank by tests/distributed (importable by spawned processes)."""

from __future__ import annotations

import torch

from tests.conftest import tiny_config


def chance_of_run(rank: int, extra: list[str]) -> dict:
    from reference_models.train import train

    cfg = tiny_config("direct", extra)
    result = train(cfg, steps=2, evaluate=False)
    return {"chance": result.chance_loss, "candidates": result.extra["candidates"],
            "history_chance": [row["chance"] for row in result.history]}


def grad_scale(rank: int, layout: dict) -> dict:
    from reference_models.distributed import gradient_scale

    g = torch.Generator().manual_seed(rank)
    image = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
    return gradient_scale(image, text, torch.tensor(10.0), gather=True, **layout)


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.image = torch.nn.Linear(12, 8)
        self.text = torch.nn.Linear(6, 8)


def watched_ddp_loop(rank: int, desync_at: int | None, steps: int) -> dict:
    """A user-style DDP loop with diagnose.watch; rank 1 optionally changes its replica at `desync_at`."""
    import torch.nn.functional as F

    import diagnose
    from diagnose.engine.watcher import DiagnoseAlarm

    torch.manual_seed(rank)
    model = _Toy()
    for p in model.parameters():  # what DDP does at construction: rank 0's weights everywhere
        torch.distributed.broadcast(p.data, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(100 + rank)
    raised = None
    # budget=None: evaluate on every step whatever it costs, so the alarm step is known
    with diagnose.watch(model, opt, alarm="raise", evaluate_every=1, budget=None, batch_size=8, probes="cheap") as w:
        try:
            for step in range(steps):
                x = torch.randn(8, 12, generator=g)
                t = x[:, :6] + 0.1 * torch.randn(8, 6, generator=g)  # captions that belong to their images
                img = F.normalize(model.image(x), dim=-1)
                txt = F.normalize(model.text(t), dim=-1)
                logits = 10 * img @ txt.t()
                labels = torch.arange(8)
                loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
                opt.zero_grad()
                loss.backward()
                for p in model.parameters():  # what DDP does: average the gradients over ranks
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= torch.distributed.get_world_size()
                w.observe(step, losses={"contrastive": loss}, embeddings={"image": img, "text": txt}, logits=logits)
                opt.step()
                if desync_at is not None and step == desync_at and rank == 1:
                    with torch.no_grad():
                        model.image.bias.add_(1e-3)
        except DiagnoseAlarm as exc:
            raised = {"step": exc.alarm.step, "id": exc.alarm.finding.id, "at": step}
    r = w.records
    grads = r[(r["probe"] == "gradient_flow") & (r["metric"] == "grad_norm")]
    return {"raised": raised, "alarms": [(a.step, a.finding.id) for a in w.alarms],
            "grad_norms": sorted(zip(grads["step"], grads["target"], grads["value"])),
            "local_loss": float(loss.detach())}


def gathered_local_loss_gradient(rank: int, fix: str | None, tmp: str) -> dict:
    """A local loss over features gathered with torch.distributed.all_gather (the rank's own shard put back), under
    `diagnose ablate`'s environment with `fix`: the DDP-averaged gradient against the global loss's gradient."""
    import json
    import os

    import torch.distributed as dist
    import torch.nn.functional as F

    import diagnose
    from diagnose.engine import ablation_env

    world, b = dist.get_world_size(), 4
    torch.manual_seed(0)  # the same model and data on every rank
    x_all, t_all = torch.randn(world * b, 6), torch.randn(world * b, 6)
    model = torch.nn.ModuleDict({"image": torch.nn.Linear(6, 5), "text": torch.nn.Linear(6, 5)})
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    if fix:
        os.environ[ablation_env.ENV] = json.dumps({"run": f"fix:{fix}", "out": f"{tmp}/run{rank}", "steps": 0,
                                                   "status": f"{tmp}/status{rank}.json", "fix": fix, "params": {}})

    def embed(x, t):
        return F.normalize(model["image"](x), dim=-1), F.normalize(model["text"](t), dim=-1)

    with diagnose.watch(model, opt, batch_size=b, candidates=world * b) as w:
        img, txt = embed(x_all[rank * b:(rank + 1) * b], t_all[rank * b:(rank + 1) * b])
        imgs, txts = [torch.empty_like(img) for _ in range(world)], [torch.empty_like(txt) for _ in range(world)]
        dist.all_gather(imgs, img)
        dist.all_gather(txts, txt)
        imgs[rank], txts[rank] = img, txt  # the local shard put back (open_clip's gather_features, no gather_with_grad)
        labels = torch.arange(b) + rank * b
        logits = 10 * img @ torch.cat(txts).t()
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(10 * txt @ torch.cat(imgs).t(), labels))
        opt.zero_grad()
        loss.backward()
        grads = [p.grad.detach().clone() for p in model.parameters()]
        for g in grads:  # what DDP applies: the ranks' gradients averaged
            dist.all_reduce(g)
            g /= world
        w.observe(0, losses={"clip": loss}, logits=logits, batch_size=b, candidates=world * b)
    opt.zero_grad()
    img, txt = embed(x_all, t_all)  # the global loss over all rows, in one process
    labels = torch.arange(world * b)
    (0.5 * (F.cross_entropy(10 * img @ txt.t(), labels) + F.cross_entropy(10 * txt @ img.t(), labels))).backward()
    ours, ref = torch.cat([g.flatten() for g in grads]), torch.cat([p.grad.flatten() for p in model.parameters()])
    return {"cosine": float(F.cosine_similarity(ours, ref, dim=0)), "scale": float(ours.norm() / ref.norm())}
