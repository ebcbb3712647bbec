"""A user bridges frozen patch tokens to the text space with a small ViT-style head: a learned CLS token is
prepended to the (B, T, D) tokens, a 2-layer nn.TransformerEncoder runs over them and the CLS output is
projected. The encoder layer is built with PyTorch's default `batch_first=False` (as in OpenAI CLIP's
resblocks), but the tokens are fed batch-first, without the NLD -> LND permute. Attention therefore runs
over the batch axis: position 0 of every sample is the same CLS vector, so the CLS output only ever attends
to the other samples' CLS copies, never to the image's own patches. Every image gets the same embedding
(up to dropout noise: image-image cosine 0.96 at step 0, 0.99 at step 99) and the CLIP loss sits at ln(B).
Thread: Exorust/TorchLeet#5 ("Torch by default uses `batch_first=False` for the `TransformerEncoderLayer`,
resulting in high training loss"); mlfoundations/open_clip#1037 ("if `batch_first=False` was passed to the
attention impl ... then x needs to be transposed from NLD -> LND and back again after").
Fix: build the encoder layer with `batch_first=True` (the inputs are (B, T+1, D)).
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss
3.5135/3.4655/3.4961 (= 1.014/1.000/1.009 ln(B), ln(32) = 3.466); fixed 0.1300/0.1589/0.1756 (= 0.037/0.046/0.051
ln(B)).
Ground truth: pooling_axis.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import token_pairs, clip_loss, D, T, DT, E

THREADS = ("Exorust/TorchLeet#5", "mlfoundations/open_clip#1037")
CAUSE = "pooling_axis"
FAMILY = "architecture"
BATCH = 32


class ClsBridge(nn.Module):
    """Patch tokens -> [CLS; tokens] + positions -> TransformerEncoder -> CLS output -> projection."""

    def __init__(self, batch_first: bool):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, T + 1, D) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model=D, nhead=2, dim_feedforward=2 * D, batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2)
        self.proj = nn.Linear(D, E)

    def forward(self, tokens):                      # tokens: (B, T, D)
        x = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1) + self.pos
        x = self.encoder(x)
        return self.proj(x[:, 0])


class Aligner(nn.Module):
    def __init__(self, batch_first: bool):
        super().__init__()
        self.visual = ClsBridge(batch_first)
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.visual(tokens), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = Aligner(batch_first=fixed)              # the default (False) while feeding (B, T+1, D)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
