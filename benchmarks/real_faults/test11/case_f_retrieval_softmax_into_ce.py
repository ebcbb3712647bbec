"""Loss function fed probabilities: the image->text similarity matrix is turned into retrieval "probabilities" with
a softmax in the model's forward (handy for ranking captions at eval), and the same matrix is then handed to the
symmetric cross-entropy, which applies its own log-softmax again. The second softmax sees inputs in [0, 1], so the
best it can reach is e^1 / (e^1 + B - 1): the loss can never drop below ~ln(B - 1 + e) - 1 and the gradient is
squashed by the first softmax. Users report exactly this symptom on similarity models.
Thread: ariecattan/SciCo#2 ("the logits being softmaxed into probabilities before being fed into the
CrossEntropyLoss ... which treats those inputs as logits and softmaxes them again. This bounds the minimum possible
loss"); nishnik/Deep-Semantic-Similarity-Model-PyTorch#2 ("the CrossEntropyLoss criterion do not need the model
output parsed by Softmax" - "That was a mistake"); openai/CLIP#344 (a user softmaxes logits_per_image before
feeding it to the loss).
Fix: return the scaled similarities themselves (drop the `.softmax(dim=-1)`).
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
3.258/3.255/3.280 (= 0.783/0.783/0.789 x ln(B), ln(B) = 4.159); fixed 0.148/0.130/0.183 (= 0.036/0.031/0.044 x ln(B), ln(B) = 4.159).
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import token_pairs, clip_loss, D, DT, E

THREADS = ("ariecattan/SciCo#2", "nishnik/Deep-Semantic-Similarity-Model-PyTorch#2", "openai/CLIP#344")
CAUSE = "temperature"
FAMILY = "loss_function"
BATCH = 64


class DualEncoder(nn.Module):
    def __init__(self, fixed: bool = False):
        super().__init__()
        self.fixed = fixed
        self.image = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.text = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        img = F.normalize(self.image(tokens.mean(1)), dim=-1)
        txt = F.normalize(self.text(texts), dim=-1)
        sim = self.logit_scale.exp() * img @ txt.t()
        logits_per_image = sim if self.fixed else sim.softmax(dim=-1)   # "probabilities" for ranking captions
        return img, txt, logits_per_image


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = DualEncoder(fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt, logits = model(tokens[idx], texts[idx])
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
