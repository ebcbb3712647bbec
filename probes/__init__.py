"""Probes: scoped instrumentation for vision→text alignment training on any `torch.nn.Module`.

    from probes import attach
    with attach(model, optimizer=opt, probes="all", every=1, expensive_every=10) as session:
        loss.backward()
        session.observe(step, losses={...}, weights={...}, embeddings={...}, logits={...}, batch_size=B)
        opt.step()
    df = session.records   # long DataFrame: step, probe, target, metric, value

Probes: latent_stats, gradient_flow, softmax_entropy, loss_split, collapse (see each module's
docstring for its metrics and targets). Presets: "cheap" (gradient_flow + loss_split), "all".
Records hold detached Python floats only; this package never imports the model code it probes.
"""

from .base import Observation, Probe
from .collapse import Collapse
from .entropy import SoftmaxEntropy
from .gradients import GradientFlow
from .graph_leaves import GraphLeaves
from .latents import LATENT_PATTERN, LatentStats
from .loss_split import LossSplit
from .session import PRESETS, PROBES, ProbeSession, attach

__all__ = [
    "PRESETS",
    "PROBES",
    "LATENT_PATTERN",
    "Collapse",
    "GradientFlow",
    "GraphLeaves",
    "LatentStats",
    "LossSplit",
    "Observation",
    "Probe",
    "ProbeSession",
    "SoftmaxEntropy",
    "attach",
]
