"""Stage-2 recipe "freeze everything, then unfreeze the parts to train" (the LLaVA-style pattern:
`model.requires_grad_(False)` followed by a loop that switches `requires_grad` back on for the connector and
the heads), with the attribute misspelled in the unfreeze loop: `p.require_grad = True`. PyTorch accepts any new
attribute on a tensor, so nothing fails: the connector (flamingo-pytorch PerceiverResampler), the image projection
and the text projection stay frozen, the optimizer built from `requires_grad` parameters holds only the logit
scale, and the CLIP loss sits at ln(B) while the user believes the connector trains. The same typo reported in a
public transfer-learning notebook: "in this solution notebook, you are freezing layers using this code:
`param.require_grad = False` ... I think `param.requires_grad` should be used instead of `param.require_grad`
(the `s` in `param.requires_grad` is missing)." (here on the unfreeze side, so the parts meant to train never do).
Thread: udacity/deep-learning-v2-pytorch#12 ("`require_grad` needs to be `requires_grad`").
Fix: `p.requires_grad = True` in the unfreeze loop.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; final = mean of the last 5 steps): fault final loss
5.8677/5.3909/5.2696 (= 1.411/1.296/1.267 x ln(64) = 4.1589); fixed 0.2095/0.2263/0.2146 (= 0.050/0.054/0.052 x
ln(64) = 4.1589).
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, token_pairs

THREADS = ("udacity/deep-learning-v2-pytorch#12",)
CAUSE = "no_gradient_path"
FAMILY = "frozen_parts"
BATCH = 64


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerAligner()
    # stage 2: freeze everything, then unfreeze the connector and both projection heads
    model.requires_grad_(False)
    for module in (model.resampler, model.proj, model.text):
        for p in module.parameters():
            if fixed:
                p.requires_grad = True
            else:
                p.require_grad = True  # the typo: a new attribute, requires_grad stays False
    model.logit_scale.requires_grad = True
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            labels = torch.arange(BATCH)
            loss = 0.5 * (torch.nn.functional.cross_entropy(logits, labels)
                          + torch.nn.functional.cross_entropy(logits.t(), labels))
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, targets=labels, extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
