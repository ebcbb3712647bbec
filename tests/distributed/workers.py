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
