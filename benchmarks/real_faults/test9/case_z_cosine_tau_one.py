"""A user ports a supervised-contrastive / NT-Xent style loss to image-text alignment: the similarity is
the cosine (both embeddings L2-normalised) and the loss function takes a `temperature` argument whose
default is left at 1.0, as in the TF2 port discussed in the thread ("we are assuming a constant tau
(temperature) value (1)"). With cosine logits bounded in [-1, 1] the softmax over the batch can never
become confident: even with perfect embeddings the loss stays far above zero, so the curve flattens well
above the level the same model reaches at tau = 0.07.
Thread: sayakpaul/Supervised-Contrastive-Learning-in-TensorFlow-2#2 ("Here, we are assuming a constant tau
(temperature) value (1)"; "there is no temperature parameter").
Fix: temperature=0.07 (the CLIP / MoCo value) instead of 1.0.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault
final loss 3.2915/3.2886/3.2984 (= 0.791/0.791/0.793 ln(64)); fixed 0.2250/0.2053/0.2272
(0.054/0.049/0.055 ln(64)).
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from torch import nn
from common import token_pairs, D, DT, E

THREADS = ("sayakpaul/Supervised-Contrastive-Learning-in-TensorFlow-2#2",)
CAUSE = "temperature"
FAMILY = "loss_function"
BATCH = 64


class Projector(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.text = nn.Linear(DT, E)

    def forward(self, tokens, texts):
        return F.normalize(self.image(tokens.mean(1)), dim=-1), F.normalize(self.text(texts), dim=-1)


def contrastive_loss(img, txt, temperature=1.0):
    logits = img @ txt.t() / temperature
    labels = torch.arange(len(img))
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)), logits


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = Projector()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    tau = 0.07 if fixed else 1.0
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            loss, logits = contrastive_loss(img, txt, temperature=tau)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, extras={"logit_scale": 1.0 / tau})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
