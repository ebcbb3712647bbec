"""A hand-written `_init_weights` uses `nn.init.constant_(m.weight, 0.02)` where the user meant the
usual `nn.init.normal_(m.weight, std=0.02)` (biases zeroed, CLIP-style bias-free last projection layer). Every
hidden unit of each MLP head then computes the same function and receives the same gradient, so the symmetry is
never broken (Adam is elementwise: equal gradients, equal updates); the bias-free last layer maps the one repeated
hidden value onto one fixed direction, so all image embeddings are +-the same unit vector, and likewise all text
embeddings (|cos| between any two image embeddings measured 1.0000 at steps 0, 40 and 79 on seed 0). Nothing separates
the pairs, and the loss sits far above ln(B) for the whole run.
Thread: HomericIntelligence/Mnemosyne#1987 ("uniform-fill weight init in multi-layer test cases causes upstream
gradients to collapse ... producing convergence-test plateaus at `ln(num_classes)`"); nndl/nndl-discussion#14
("若直接初始化参数为全0或同一个常数，则在前向计算时，所有隐藏层神经元都具有相同的激活值，在反向传播时，所有的神经元的更新也相同" -
with all-zero or one constant init every hidden neuron has the same activation and the same update).
Fix: `nn.init.normal_(m.weight, std=0.02)` instead of `nn.init.constant_(m.weight, 0.02)`.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
13.150/13.086/16.962 (= 3.16/3.15/4.08 ln(64)); fixed 0.1172/0.1270/0.0979 (= 0.028/0.031/0.024 ln(64)).
Ground truth: embedding_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, clip_loss, token_pairs

THREADS = ("HomericIntelligence/Mnemosyne#1987", "nndl/nndl-discussion#14")
CAUSE = "embedding_collapse"
FAMILY = "initialisation"
BATCH = 64
FIXED = False


def head(d_in: int) -> nn.Module:
    # CLIP-style projection: MLP whose last layer has no bias
    return nn.Sequential(nn.Linear(d_in, 128), nn.GELU(), nn.Linear(128, E, bias=False))


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.image_proj = head(D)
        self.text_proj = head(DT)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.apply(self._init_weights)

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            if FIXED:
                nn.init.normal_(m.weight, std=0.02)  # the fix
            else:
                nn.init.constant_(m.weight, 0.02)  # bug: meant normal_(std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, tokens, texts):
        return F.normalize(self.image_proj(tokens.mean(1)), dim=-1), F.normalize(self.text_proj(texts), dim=-1)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    global FIXED
    FIXED = fixed
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = Aligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx].mean(1))
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
