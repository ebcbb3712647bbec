"""Freezing by a list of names: the user keeps a pretrained patch embedding ("backbone") frozen and wants to train
the new resampler, its projection, the text head and the temperature, so the script sets
`p.requires_grad = name in TRAINABLE` with TRAINABLE holding the module names. named_parameters() yields
"aligner.proj.weight", "aligner.resampler.latents", ..., so the exact test matches only the one bare parameter,
"aligner.logit_scale": the resampler and both projections are frozen with the backbone, the optimizer (built from the
parameters that require grad) holds the temperature alone, and the loss sits at chance while no error is raised.
FOREC#6: "you should freeze the fc_layers rather than the mh_layers. But in the freeze_model() function ... You freeze
the mh_layers and unfreeze the buttom which I think is wrong"; ultralytics#23306: "With freeze=23, the whole head is
frozen ... There's nothing to train if all layers are frozen".
Thread: hamedrab/FOREC#6 ("You freeze the mh_layers and unfreeze the buttom"); ultralytics/ultralytics#23306
("With `freeze=23`, the whole head is frozen").
Fix: match by prefix, `p.requires_grad = name.startswith(TRAINABLE)`.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; final = mean of the last 5 steps): fault final loss
5.9811/4.7359/6.5930 (= 1.438/1.139/1.585 ln(64): random frozen embeddings at the initial scale 14.3); fixed
0.2121/0.2094/0.2878 (0.051/0.050/0.069 ln(64)).
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from torch import nn
from common import D, ResamplerAligner, clip_loss, token_pairs

THREADS = ("hamedrab/FOREC#6", "ultralytics/ultralytics#23306")
CAUSE = "no_gradient_path"
FAMILY = "frozen_parts"
BATCH = 64
TRAINABLE = ("aligner.resampler", "aligner.proj", "aligner.text", "aligner.logit_scale")


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(D, D)        # stands for the pretrained patch embedding: stays frozen
        self.aligner = ResamplerAligner()

    def forward(self, tokens, texts):
        return self.aligner(self.backbone(tokens), texts)


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = Model()
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(TRAINABLE) if fixed else name in TRAINABLE   # the fix: prefix match
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.aligner.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
