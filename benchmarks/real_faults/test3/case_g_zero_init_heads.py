"""Zero-initialised output projections, borrowed from adapter recipes (ControlNet's `zero_module`, which zeroes
every parameter of a module, LoRA's zero B matrix) so that "the new heads start neutral": the user wraps the image
projection after the flamingo-pytorch PerceiverResampler and the text projection in `zero_module`, weight and bias.
In ControlNet the zero branch sits beside a frozen path that carries the signal; here there is none, so every image
and every caption embeds as the zero vector: all logits are 0, the softmax is uniform, and the gradient that
reaches the heads is multiplied by the other side's (zero) embeddings, so it is exactly zero, nothing below the
heads gets any either, nothing ever moves and the loss stays at ln(B). The pitfall as a public issue puts it:
"Pitfall: all zero
initialization ... if every neuron in the network computes the same output, then they will also all compute the
same gradients during backpropagation and undergo the exact same parameter updates" (wagonhelm/NaNmnist#2, quoting
the CS231n notes).
Thread: wagonhelm/NaNmnist#2 ("Highly improper way of weight initialization").
Fix: drop the `zero_module` wrap of the heads (keep nn.Linear's default init).
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.1589/4.1589/4.1589 (= 1.000/1.000/1.000 x ln(64) = 4.1589); fixed 0.2115/0.2284/0.2167 (= 0.051/0.055/0.052 x
ln(64) = 4.1589).
Ground truth: embedding_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from torch import nn
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("wagonhelm/NaNmnist#2",)
CAUSE = "embedding_collapse"
FAMILY = "initialisation"
BATCH = 64


def zero_module(module: nn.Module) -> nn.Module:
    """ControlNet's helper: zero out the parameters of a module and return it."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerAligner(latents=8, depth=2)
    if not fixed:
        model.proj, model.text = zero_module(model.proj), zero_module(model.text)  # "start the heads at zero"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
