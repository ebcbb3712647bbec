"""Two-stage freezing where the unfreeze comes after the optimizer was built. The script freezes the whole
aligner, unfreezes the text head, and builds the optimizer the way the maintainers advise, over
`filter(lambda p: p.requires_grad, model.parameters())`; only then does a later block "unfreeze the vision
side" (`model.resampler.requires_grad_(True)`, `model.proj.requires_grad_(True)`, and the logit scale). Those
parameters now receive gradients on every step but sit in no param group, so only the text linear learns and
it can only chase the image embeddings of a random, never-updated resampler. The threads: "可能还需要在optimizer的
创建中过滤掉那些冻结的参数 ... filtered_parameters = filter(lambda p: p.requires_grad, net.parameters())"; "I
think the optimizer doesn't have the parameters from backbone, then the backbone is not updated".
Thread: cfzd/Ultra-Fast-Lane-Detection#282 ("filter the frozen parameters when creating the optimizer");
BINE022/EEGPT#18 ("the optimizer doesn't have the parameters from backbone").
Fix: unfreeze the vision side before the optimizer is built.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss 1.9156/2.1560/1.7423 (= 0.461/0.518/0.419 ln(B), ln(64) = 4.1589); fixed 0.1687/0.1632/0.1735 (= 0.041/0.039/0.042 ln(B)). The
fault learns part way (the text head alone), ten times the fixed loss on every seed.
Ground truth: param_not_in_optimizer.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("cfzd/Ultra-Fast-Lane-Detection#282", "BINE022/EEGPT#18")
CAUSE = "param_not_in_optimizer"
FAMILY = "frozen_parts"
BATCH = 64


def unfreeze_vision(model) -> None:
    model.resampler.requires_grad_(True)
    model.proj.requires_grad_(True)
    model.logit_scale.requires_grad_(True)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner(latents=8)
    model.requires_grad_(False)          # stage 0: everything frozen
    model.text.requires_grad_(True)      # text head always trains
    if fixed:
        unfreeze_vision(model)
    opt = torch.optim.AdamW(filter(lambda p: p.requires_grad, model.parameters()), lr=1e-3, weight_decay=0.01)
    if not fixed:
        unfreeze_vision(model)           # BUG: after the optimizer was built
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
