"""A user's Lightning script with our callback, unmodified under `diagnose ablate --`. `--lr` sets the lr
(2e-4: too low for 20 steps; x10 learns)."""

import argparse
import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from diagnose.integrations.lightning import DiagnoseCallback

p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, default=3e-3)
p.add_argument("--steps", type=int, default=30)
args = p.parse_args()

L.seed_everything(0, verbose=False)
g = torch.Generator().manual_seed(0)
z = torch.randn(512, 8, generator=g)
ds = torch.utils.data.TensorDataset(z @ torch.randn(8, 24, generator=g) + 0.1 * torch.randn(512, 24, generator=g),
                                    z @ torch.randn(8, 16, generator=g) + 0.1 * torch.randn(512, 16, generator=g))


class Towers(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(24, 32), nn.GELU(), nn.Linear(32, 16))
        self.text = nn.Linear(16, 16)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def training_step(self, batch, batch_idx):
        img, txt = F.normalize(self.image(batch[0]), dim=-1), F.normalize(self.text(batch[1]), dim=-1)
        logits = self.logit_scale.exp() * img @ txt.T
        labels = torch.arange(len(img))
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        return {"loss": loss, "image_embeds": img, "text_embeds": txt, "logits": logits}

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=args.lr)


loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, drop_last=True)
trainer = L.Trainer(max_steps=args.steps, callbacks=[DiagnoseCallback()], accelerator="cpu", logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
trainer.fit(Towers(), loader)
