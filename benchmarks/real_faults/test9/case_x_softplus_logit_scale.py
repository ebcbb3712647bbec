"""Logit scale passed through softplus instead of exp. The user keeps CLIP's parameter initialised at
ln(1/0.07) = 2.66 but turns it into a scale with `F.softplus(logit_scale)` (a "trick" copied from an EEG-image
CLIP repo, where softplus replaces exp), so the cosine logits are multiplied by ~2.7 instead of 14.3: the
softmax over the batch can never become confident, and the parameter creeps up far too slowly at lr 1e-3 to
compensate. The loss falls a little and then sits far above what the same model reaches with exp.
Thread: HaitaoWuTJU/Uncertainty-aware-Blur-Prior#11 (translated: "why does logit_scale only go through softplus
and not exp()?"; maintainer: "we use softplus instead of exp ... softplus and exp both keep the value > 0").
Fix: `scale = model.logit_scale.exp()` instead of `F.softplus(model.logit_scale)`.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
2.016/2.019/2.003 (= 0.48/0.49/0.48 ln(B), ln(64) = 4.1589); fixed 0.168/0.163/0.173 (= 0.040/0.039/0.042 ln(B)).
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import ResamplerAligner, token_pairs, clip_loss

THREADS = ("HaitaoWuTJU/Uncertainty-aware-Blur-Prior#11",)
CAUSE = "temperature"
FAMILY = "normalisation_temperature"
BATCH = 64


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp() if fixed else F.softplus(model.logit_scale)
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
