"""Freeze-then-unfreeze done on the wrong object. The user wants the (pretrained) Perceiver resampler frozen and
the two projection heads trained: `model.requires_grad_(False)` freezes everything, then each head is "unfrozen"
with `head.requires_grad = True`. On an `nn.Module` that only sets a new Python attribute; it does not reach
the head's parameters, which stay frozen. The optimizer is built from the parameters that require grad (the
usual `filter(lambda p: p.requires_grad, ...)`), so only the logit scale is trained: no gradient reaches either
projection and the loss never gets below ln(B) (it stays above it, at the random heads' level), with no error.
Threads: catalyst-team/catalyst#81 ("Add internal for-loop through parameters in module to set
requires_grad=False. That makes model not trainable in case of frozen=True": the fix loops over the module's
parameters because the flag set on the module itself had not reached them); pytorch/pytorch#1266 (frozen
parameters and the optimizer: "you can filter the parameters so that only the parameters that requires gradient
are passed to the optimizer").
Fix: `head.requires_grad_(True)` (the method, which sets every parameter of the head).
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
5.7759/5.3177/5.2580 (= 1.389/1.279/1.264 x ln(B)); fixed 0.4086/0.3821/0.3917 (= 0.098/0.092/0.094 x ln(B));
ln(B) = 4.1589.
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("catalyst-team/catalyst#81", "pytorch/pytorch#1266")
CAUSE = "no_gradient_path"
FAMILY = "frozen_parts"
BATCH = 64


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens, texts), batch_size=BATCH,
                                         shuffle=True, drop_last=True)
    model = ResamplerAligner()
    model.requires_grad_(False)                 # freeze the whole thing ...
    for head in (model.proj, model.text):       # ... then unfreeze the projection heads
        if fixed:
            head.requires_grad_(True)
        else:
            head.requires_grad = True           # a plain attribute on the Module: its parameters stay frozen
    model.logit_scale.requires_grad = True      # a Parameter: this one does unfreeze
    opt = torch.optim.AdamW(filter(lambda p: p.requires_grad, model.parameters()), lr=1e-3, weight_decay=0.01)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            for tok, txt_in in loader:
                if step >= steps:
                    break
                img, txt = model(tok, txt_in)
                scale = model.logit_scale.exp()
                logits = scale * img @ txt.t()
                loss = clip_loss(logits)
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=len(img), inputs=tok, extras={"logit_scale": scale})
                opt.step()
                opt.zero_grad()
                step += 1


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
