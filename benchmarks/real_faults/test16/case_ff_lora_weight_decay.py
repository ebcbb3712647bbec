"""The user fine-tunes a frozen aligner with LoRA adapters (rank 8) on its image projection and text
projection, CLIP-LoRA style, with AdamW. Cleaning up the arguments, the weight decay became 1e2 instead of
PyTorch's default 1e-2: every step AdamW shrinks the adapters by lr * 100, far faster than the gradients can
grow them, so the low-rank update stays near zero and the loss stays where the frozen model starts.

Thread: MaxZanella/CLIP-LoRA#1 ("I accidentally set the weight decay value to 1e2 instead of the default PyTorch value of 1e-2")
Fix: AdamW(..., weight_decay=1e-2).
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss 5.896/5.476/5.406 (= 1.418/1.317/1.300 ln(B)); fixed 0.768/1.075/1.053 (= 0.185/0.258/0.253 ln(B)).
Ground truth: weight_decay_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
from torch import nn
from common import token_pairs, ResamplerAligner, clip_loss

THREADS = ("MaxZanella/CLIP-LoRA#1",)
CAUSE = "weight_decay_collapse"
FAMILY = "weight decay"
BATCH = 64


class LoRALinear(nn.Module):
    """loralib-style adapter: frozen base layer + (alpha / r) * B A, B initialised at zero."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: int = 8):
        super().__init__()
        self.base = base
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scaling


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerAligner()
    for p in model.parameters():
        p.requires_grad_(False)
    model.proj = LoRALinear(model.proj)
    model.text = LoRALinear(model.text)
    lora_params = [p for n, p in model.named_parameters() if "lora_" in n]
    wd = 1e-2 if fixed else 1e2
    opt = torch.optim.AdamW(lora_params, lr=2e-3, weight_decay=wd)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
