"""StepLR meant per epoch, stepped per batch. The script copies the transfer-learning recipe "Decay LR by a
factor of 0.1 every 7 epochs" (`StepLR(opt, step_size=7, gamma=0.1)`) but calls `scheduler.step()` inside the
batch loop next to `opt.step()`, so the decay comes every 7 *batches*: after 21 batches the lr is 1e-3 of its
start and the resampler aligner stops moving long before it has learned. Users ask exactly this:
"scheduler.step.is call after each batch or epoch?" / "indeed, I am also curious as we usually call optim.step()
after each batch"; and a repo whose comment says "# Decay LR by a factor of 0.1 every 7 epochs" over a
`StepLR(optimizer_ft, step_size=1, gamma=0.98)`.
Thread: ildoonet/pytorch-gradual-warmup-lr#22 ("scheduler.step.is call after each batch or epoch?");
miraclewkf/MobileNetV2-PyTorch#7 ("your comment does not match your code").
Fix: call `sched.step()` once per epoch (after the batch loop), not per batch.
Validated without the tool (seeds 0,1,2; 96 steps = 6 epochs of 16 batches; batch 64; final = mean of the last 5 steps): fault final loss 2.4715/2.3779/2.1788 (= 0.594/0.572/0.524 ln(B), ln(64) = 4.1589); fixed 0.1206/0.1281/0.1303 (= 0.029/0.031/0.031 ln(B)).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("ildoonet/pytorch-gradual-warmup-lr#22", "miraclewkf/MobileNetV2-PyTorch#7")
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 64


def train(watch, steps: int = 96, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner(latents=8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.1)  # "decay by 0.1 every 7 epochs"
    per_epoch = len(tokens) // BATCH
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        for epoch in range(steps // per_epoch):
            perm = torch.randperm(len(tokens))
            for b in range(per_epoch):
                idx = perm[b * BATCH:(b + 1) * BATCH]
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                opt.zero_grad(); loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, inputs=tokens[idx])
                opt.step()
                if not fixed:
                    sched.step()  # BUG: per batch
                step += 1
            if fixed:
                sched.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
