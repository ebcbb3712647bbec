"""The recipe's MultiStepLR gives its milestones in epochs (decay x0.1 at epochs 3 and 6 of 8), but the training loop
calls `sched.step()` after every optimizer step, the way a per-iteration warm-up scheduler is called: the milestones are
reached at batches 3 and 6, the learning rate is 1e-5 from the 7th batch on, and the aligner stops learning before it
has found the pair structure. ClimaX#25: "the interval should be set as "epoch" and not "step" ..., as the milestones
for the scheduler are also given in epochs"; Tacotron#3: "MultiStepLR looks for an array of epoch milestones, but it
looks like you have training step milestones ... set the scheduler to step every iteration, not every epoch loop".
Thread: microsoft/ClimaX#25 ("the milestones for the scheduler are also given in epochs"); bshall/Tacotron#3
("MultiStepLR looks for an array of epoch milestones").
Fix: call sched.step() once per epoch (after the epoch's last batch), not after every batch.
Validated without the tool (seeds 0,1,2; 64 steps = 8 epochs of 8 batches; batch 64; final = mean of the last 5 steps): fault
final loss 3.9687/4.2014/3.2057 (= 0.954/1.010/0.771 ln(64)); fixed 0.6501/0.8209/0.6163 (0.156/0.197/0.148 ln(64)).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("microsoft/ClimaX#25", "bshall/Tacotron#3")
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 64
EPOCHS, MILESTONES = 8, [3, 6]


def train(watch, steps: int = 64, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(512, seed=seed)
    batches_per_epoch = len(tokens) // BATCH
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=MILESTONES, gamma=0.1)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        for epoch in range(EPOCHS):
            perm = torch.randperm(len(tokens))
            for b in range(batches_per_epoch):
                if step >= steps:
                    return
                idx = perm[b * BATCH:(b + 1) * BATCH]
                img, txt = model(tokens[idx], texts[idx])
                scale = model.logit_scale.exp()
                logits = scale * img @ txt.t()
                loss = clip_loss(logits)
                opt.zero_grad(); loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale})
                opt.step()
                if not fixed or b == batches_per_epoch - 1:   # the fix: only after the epoch's last batch
                    sched.step()
                step += 1


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
