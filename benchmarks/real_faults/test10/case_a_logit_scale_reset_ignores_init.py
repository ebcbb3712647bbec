"""An aligner written in the open_clip style takes `init_logit_scale=log(1/0.07)` in its constructor, but its
`reset_parameters()` (called at the end of __init__ and by the user's re-init helper) does `nn.init.ones_` on the
log-scale, ignoring the configured value: the logits are scaled by e^1 = 2.7 instead of 14.3, the softmax over 128
candidates cannot become confident, and with lr 1e-3 the learnable log-scale climbs only ~0.1 in a run, so the loss
stays far above what the same model reaches. timm#2605: "Previously, reset_parameters() set gamma to ones, ignoring
init_values and effectively disabling LayerScale's small-init behavior. Now, gamma is initialized to init_values via
nn.init.constant_"; FrEIA#117: "the current definition of the parameters in self.s disable different initialization
and self.s will always be initialized with zeros everywhere".
Thread: huggingface/pytorch-image-models#2605 ("reset_parameters() set gamma to ones, ignoring init_values");
vislearn/FrEIA#117 ("disable different initialization").
Fix: `nn.init.constant_(self.logit_scale, self.init_logit_scale)` in reset_parameters.
Validated without the tool (seeds 0,1,2; 80 steps; batch 128; final = mean of the last 5 steps): fault final
loss 2.5599/2.5446/2.5639 (= 0.528/0.524/0.528 ln(128)); fixed 0.2302/0.2187/0.2664 (0.047/0.045/0.055 ln(128)).
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import ResamplerAligner, token_pairs

THREADS = ("huggingface/pytorch-image-models#2605", "vislearn/FrEIA#117")
CAUSE = "temperature"
FAMILY = "initialisation"
BATCH = 128


class Aligner(ResamplerAligner):
    def __init__(self, init_logit_scale: float = math.log(1 / 0.07), fixed: bool = False):
        super().__init__()
        self.init_logit_scale, self.fixed = init_logit_scale, fixed
        self.reset_parameters()

    def reset_parameters(self):
        if self.fixed:
            nn.init.constant_(self.logit_scale, self.init_logit_scale)   # the fix
        else:
            nn.init.ones_(self.logit_scale)                              # ignores init_logit_scale


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = Aligner(fixed=fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    labels = torch.arange(BATCH)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, targets=labels, extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
