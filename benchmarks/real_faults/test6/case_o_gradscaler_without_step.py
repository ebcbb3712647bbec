"""GradScaler used only to scale the loss: `scaler.scale(loss).backward()` followed by a plain
`optimizer.step()`. The user adds fp16 autocast and a GradScaler to an SGD-trained aligner but keeps the
old `optimizer.step()` line, so the gradients the optimizer applies are still multiplied by the scaler's
initial scale (2**16 = 65536) and are never unscaled or checked for inf; `scaler.update()` never runs. The
first SGD step is 65536 times the intended one and the loss is NaN from the second step on.
"isn't it a problem that the sample code uses the GradScaler, but only for scaling the loss and not for
the update step? This way, the gradients are now 1024x larger than they should be" / maintainer: "Yeah this
is probably an abuse of grad_scaler. Effectively what Im doing here is just (loss * 1024).backward()"
(nerfstudio-project/nerfacc#307; with Adam that is nearly harmless, Adam divides the scale out, with SGD
it is not); the API's own recipe: "Carry out a scaling-safe step. scaler.step() unscales the optimizer's
gradients and skips optimizer.step() if the gradients contain infs or NaNs" (pytorch/pytorch#26512, the
gradient scaling API).
Thread: nerfstudio-project/nerfacc#307 ("uses the GradScaler, but only for scaling the loss and not for the
update step"); pytorch/pytorch#26512 ("scaler.step() unscales the optimizer's gradients and skips
optimizer.step() if the gradients contain infs or NaNs").
Fix: `scaler.step(optimizer); scaler.update()` instead of `optimizer.step()`.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final
loss NaN on all 3 seeds (first non-finite loss at step 1, right after the first
optimizer step); fixed 0.0400/0.0234/0.0731 (= 0.010/0.006/0.018 ln(64)).
Ground truth: nonfinite_divergence.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("nerfstudio-project/nerfacc#307", "pytorch/pytorch#26512")
CAUSE = "nonfinite_divergence"
FAMILY = "precision"
BATCH = 64


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu")
    with watch(model, optimizer, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            with torch.autocast("cpu", dtype=torch.float16):
                img, txt = model(tokens[idx], texts[idx])
                scale = model.logit_scale.exp()
                logits = scale * img @ txt.t()
            loss = clip_loss(logits.float())
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale})
            if fixed:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
