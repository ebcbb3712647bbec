"""A transformers CLIPModel (tiny config, random weights) fine-tuned with Lightning's
`BackboneFinetuning`: the two towers are frozen for the first epoch while the projections and the
temperature train, then unfrozen into a new param group at a tenth of the lr. The job is
preempted after epoch 1 and resumed from the epoch-end checkpoint. On the resumed fit the callback
freezes the towers again before the optimizer is built, puts the saved param groups back, and
never gives the towers their `requires_grad` back: the towers sit in the optimizer with a learning
rate and get no gradient, and the loss stays near ln(B).

What the user did: `Trainer(callbacks=[BackboneFinetuning(unfreeze_backbone_at_epoch=1)])`,
`configure_optimizers` over `filter(lambda p: p.requires_grad, self.parameters())`, and after the
interruption `trainer.fit(model, ckpt_path=last)`. Here the callback's hooks are written out around
a plain loop in the order the trainer calls them (setup and `freeze_before_training`, the
optimizer, `on_fit_start` restoring the param groups from the callback's state, the optimizer's
state, then `finetune_function` at each epoch start), the checkpoint goes through `torch.save` /
`torch.load`, and 10 steps make an epoch of the 640 training pairs.

What went wrong and why: the thread's words: "`BaseFinetuning.setup()` calls
`self.freeze_before_training(pl_module)` unconditionally, on a resumed run as well as a fresh
one", and `on_fit_start()` "only restores group membership. It never restores
`param.requires_grad`." `finetune_function` unfreezes only when `epoch == unfreeze_backbone_at_epoch`
and afterwards only rescales the group's lr, so "the affected parameters stay in the optimizer with
their correct learning rate, but `requires_grad` is `False`, so they receive no gradients and never
update again. There is no warning." With the towers frozen at their random initialisation (one
short epoch of training at lr/10 before the interruption), the projections alone cannot align
images with captions.

The fix: the pull request's: on resume, give `requires_grad` back to the parameters of the param
groups that were added after the ones `configure_optimizers()` created (the groups
`unfreeze_and_add_param_group()` appended in the previous run).

Validation (validate.py, 100 steps, B = 64, chance ln(B) = 4.159; final loss / ln(B)):
fault 0.9438 / 0.8924 / 0.9304 (seeds 0 / 1 / 2), fixed 0.1761 / 0.1500 / 0.1600.

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import io

import torch
from torch import nn

from common import image_caption_pairs, tiny_clip

THREADS = ("Lightning-AI/pytorch-lightning#21901", "Lightning-AI/pytorch-lightning#21902")
CAUSE = "no_gradient_path"
FAMILY = "checkpoint and resume"

B = 64
N_PAIRS = 640  # 10 steps an epoch
LR = 1e-3


class CLIPFinetune(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        self.clip = tiny_clip(seed)

    @property
    def backbone(self) -> nn.ModuleList:
        return nn.ModuleList([self.clip.vision_model, self.clip.text_model])

    def forward(self, pixels, ids):
        return self.clip(input_ids=ids, pixel_values=pixels, return_loss=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(filter(lambda p: p.requires_grad, self.parameters()), lr=LR)


class BackboneFinetuning:
    """Lightning's `BackboneFinetuning` (defaults: lr ratio 0.1, x1.5 per epoch, aligned to the lr)."""

    def __init__(self, unfreeze_backbone_at_epoch: int = 1, backbone_initial_ratio_lr: float = 0.1,
                 restore_requires_grad: bool = False):
        self.unfreeze_backbone_at_epoch = unfreeze_backbone_at_epoch
        self.backbone_initial_ratio_lr = backbone_initial_ratio_lr
        self.lambda_func = lambda epoch: 1.5
        self.should_align = True
        self.previous_backbone_lr = None
        self._internal_optimizer_metadata = {}
        self._restarting = False
        self._restore_requires_grad = restore_requires_grad

    # -- state in the checkpoint
    def state_dict(self):
        return {"internal_optimizer_metadata": self._internal_optimizer_metadata,
                "previous_backbone_lr": self.previous_backbone_lr}

    def load_state_dict(self, state):
        self.previous_backbone_lr = state["previous_backbone_lr"]
        self._internal_optimizer_metadata = state["internal_optimizer_metadata"]
        self._restarting = True

    # -- hooks
    def freeze_before_training(self, pl_module):
        for p in pl_module.backbone.parameters():
            p.requires_grad = False

    def setup(self, pl_module):
        self.freeze_before_training(pl_module)

    def on_fit_start(self, pl_module, optimizer):
        if not self._restarting:
            return
        named = dict(pl_module.named_parameters())
        n_configured = len(optimizer.param_groups)
        groups = []
        for meta in self._internal_optimizer_metadata[0]:
            group = dict(meta)
            group["params"] = [named[name] for name in meta["params"]]
            groups.append(group)
        optimizer.param_groups = groups
        if self._restore_requires_grad:
            for group in groups[n_configured:]:
                for p in group["params"]:
                    p.requires_grad = True
        self._restarting = False

    def finetune_function(self, pl_module, epoch, optimizer):
        if epoch == self.unfreeze_backbone_at_epoch:
            current_lr = optimizer.param_groups[0]["lr"]
            initial_backbone_lr = current_lr * self.backbone_initial_ratio_lr
            self.previous_backbone_lr = initial_backbone_lr
            params = list(pl_module.backbone.parameters())
            for p in params:
                p.requires_grad = True
            optimizer.add_param_group({"params": params, "lr": initial_backbone_lr})
        elif epoch > self.unfreeze_backbone_at_epoch:
            current_lr = optimizer.param_groups[0]["lr"]
            next_current_backbone_lr = self.lambda_func(epoch + 1) * self.previous_backbone_lr
            if self.should_align and next_current_backbone_lr > current_lr:
                next_current_backbone_lr = current_lr
            optimizer.param_groups[-1]["lr"] = next_current_backbone_lr
            self.previous_backbone_lr = next_current_backbone_lr

    def on_train_epoch_start(self, pl_module, epoch, optimizer):
        self.finetune_function(pl_module, epoch, optimizer)
        names = {id(p): n for n, p in pl_module.named_parameters()}
        self._internal_optimizer_metadata[0] = [
            {**{k: v for k, v in g.items() if k != "params"}, "params": [names[id(p)] for p in g["params"]]}
            for g in optimizer.param_groups]


def epoch_batches(seed: int, epoch: int):
    perm = torch.randperm(N_PAIRS, generator=torch.Generator().manual_seed(1000 * seed + epoch))
    return [perm[i * B:(i + 1) * B] for i in range(N_PAIRS // B)]


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    pixels, ids = image_caption_pairs(N_PAIRS, seed=seed)

    # first fit: epochs 0 and 1, checkpoint at the end of epoch 1, then the job is preempted
    model = CLIPFinetune(seed)
    finetuning = BackboneFinetuning()
    finetuning.setup(model)
    optimizer = model.configure_optimizers()
    finetuning.on_fit_start(model, optimizer)
    for epoch in range(2):
        finetuning.on_train_epoch_start(model, epoch, optimizer)
        for idx in epoch_batches(seed, epoch):
            out = model(pixels[idx], ids[idx])
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
    buffer = io.BytesIO()
    torch.save({"epoch": epoch, "state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()],
                "callbacks": {"BackboneFinetuning": finetuning.state_dict()}}, buffer)
    del model, optimizer, finetuning

    # trainer.fit(model, ckpt_path=last)
    buffer.seek(0)
    ckpt = torch.load(buffer)
    model = CLIPFinetune(seed)
    model.load_state_dict(ckpt["state_dict"])
    finetuning = BackboneFinetuning(restore_requires_grad=fixed)
    finetuning.load_state_dict(ckpt["callbacks"]["BackboneFinetuning"])
    finetuning.setup(model)
    optimizer = model.configure_optimizers()
    finetuning.on_fit_start(model, optimizer)
    optimizer.load_state_dict(ckpt["optimizer_states"][0])

    session = watch(model, optimizer, batch_size=B)
    step, epoch = 0, ckpt["epoch"] + 1
    while step < steps:
        finetuning.on_train_epoch_start(model, epoch, optimizer)
        for idx in epoch_batches(seed, epoch):
            if step == steps:
                break
            out = model(pixels[idx], ids[idx])
            optimizer.zero_grad()
            out.loss.backward()
            session.observe(step, losses={"clip": out.loss},
                            embeddings={"image": out.image_embeds, "text": out.text_embeds},
                            logits=out.logits_per_image, batch_size=B)
            optimizer.step()
            step += 1
        epoch += 1
    session.close()
