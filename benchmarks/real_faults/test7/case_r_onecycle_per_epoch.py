"""A OneCycleLR built with `epochs=` and `steps_per_epoch=` (so it counts batches) but stepped once per
epoch, where the training loop's other schedulers (StepLR) were stepped: the 1cycle warm-up, meant to raise the lr
from max_lr/25 to max_lr within the first 30% of the batches, advances one notch per epoch, so the whole run trains
at the warm-up's starting lr (4.0e-5, 4.3e-5, 5.2e-5 in the three epochs here, against max_lr 1e-3) and the resampler aligner barely moves.
Thread: pytorch/pytorch#65417 ("This code will lead to only `epochs` updates of lr&momentum and to change it only to
a fraction of `steps_per_epoch/epochs` of the intended schedule"); ageron/handson-mlp#28 ("calls `scheduler.step()`
at the end of every epoch ... the documentation of OneCycleLR scheduler" says it should be called after every batch).
Fix: call `sched.step()` after every `opt.step()` (inside the batch loop), not once per epoch.
Validated without the tool (seeds 0,1,2; 96 steps = 3 epochs of 32 batches; batch 64; final = mean of the last 5
steps): fault final loss 2.4652/2.7902/3.4649 (= 0.593/0.671/0.833 ln(64)); fixed 0.2161/0.1874/0.2529
(= 0.052/0.045/0.061 ln(64)).
Ground truth: learning_rate_too_low (the lr in effect all run is the schedule's starting lr, 25x below max_lr).
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("pytorch/pytorch#65417", "ageron/handson-mlp#28")
CAUSE = "learning_rate_too_low"
FAMILY = "optimizer_schedule"
BATCH = 64
MAX_LR = 1e-3


def train(watch, steps: int = 96, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = ResamplerAligner()
    steps_per_epoch = len(tokens) // BATCH
    epochs = max(1, steps // steps_per_epoch)
    opt = torch.optim.AdamW(model.parameters(), lr=MAX_LR, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=MAX_LR, epochs=epochs, steps_per_epoch=steps_per_epoch)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        for epoch in range(epochs):
            perm = torch.randperm(len(tokens))
            for i in range(steps_per_epoch):
                idx = perm[i * BATCH:(i + 1) * BATCH]
                img, txt = model(tokens[idx], texts[idx])
                scale = model.logit_scale.exp()
                logits = scale * img @ txt.t()
                loss = clip_loss(logits)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale})
                opt.step()
                if fixed:
                    sched.step()  # the fix: OneCycleLR counts batches, step it every batch
                step += 1
            if not fixed:
                sched.step()  # the bug: stepped once per epoch, like StepLR


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
