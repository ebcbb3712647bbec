"""An epoch-based step schedule stepped once per batch. The recipe says "lr 2e-4, divided by 10 every 10 epochs"
(StepLR(step_size=10, gamma=0.1)); the training loop has an epoch loop around a batch loop, and `scheduler.step()`
sits inside the batch loop next to `optimizer.step()`. StepLR counts calls, not epochs, so the learning rate is cut
10x after 10 batches, 100x after 20 (the end of the first epoch) and is 1e-10 of its value by batch 100: the
aligner gets about ten useful updates and the CLIP loss stays near ln(B). The threads: pytorch/tutorials#640
("scheduler.step() per epoch not per batch", merged by soumith) and nodefluxio/vortex#58 ("Pytorch original
scheduler have different application of scheduler step (some of them in each batch update, the others only called
once per epoch). However in default trainer, it always called per batch update").
Thread: pytorch/tutorials#640 ("scheduler.step() per epoch not per batch"); nodefluxio/vortex#58 ("it always
called per batch update").
Fix: call `sched.step()` after the batch loop (once per epoch), not inside it.
Validated without the tool (seeds 0,1,2; 100 steps = 5 epochs of 20 batches; batch 64; final = mean of the last 5
steps): fault final loss 5.708/4.080/3.870 (= 1.372/0.981/0.930 ln(64));
fixed 0.863/0.483/0.477 (= 0.207/0.116/0.115 ln(64)).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("pytorch/tutorials#640", "nodefluxio/vortex#58")
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 64
BATCHES_PER_EPOCH = 20


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(4096, seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.1)  # "every 10 epochs"
    g = torch.Generator().manual_seed(seed)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        for epoch in range((steps + BATCHES_PER_EPOCH - 1) // BATCHES_PER_EPOCH):
            for _ in range(BATCHES_PER_EPOCH):
                if step >= steps:
                    break
                idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
                img, txt = model(tokens[idx], texts[idx])
                scale = model.logit_scale.exp()
                logits = scale * img @ txt.t()
                loss = clip_loss(logits)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, extras={"logit_scale": scale})
                opt.step()
                if not fixed:
                    sched.step()  # inside the batch loop
                step += 1
            if fixed:
                sched.step()  # once per epoch


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
