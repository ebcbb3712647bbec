"""A user adds the learning-rate decay of the llama fine-tuning recipe to an aligner: `StepLR(optimizer,
step_size=1, gamma=0.85)`, meant as "multiply the lr by 0.85 once per epoch", and calls `scheduler.step()` right
after `optimizer.step()` inside the batch loop. Every batch multiplies the lr by 0.85: after 20 batches it is 4% of
its value, after 40 under 0.2%, so the model gets the equivalent of about six full-lr steps in total and the
contrastive loss freezes far above where it would have gone. The recipe's PR: "to update the lr after each epoch
instead of per step"; the same mistake in another report: "It seems that the position of scheduler.step() is error
..., which leads to the learning-rate decrese too fast".
Thread: meta-llama/llama-cookbook#28 ("update the lr after each epoch instead of per step").
Fix: step the scheduler once per epoch (after the batch loop), as the PR does.
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss 3.167/2.912/2.760 (= 0.91/0.84/0.80 ln(B), ln(32) = 3.466); fixed 0.150/0.156/0.135 (= 0.04/0.05/0.04 ln(B), ln(32) = 3.466).
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("meta-llama/llama-cookbook#28",)
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.85)
    batches_per_epoch = len(tokens) // BATCH                 # 32 batches an epoch
    perm = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(tokens), generator=perm)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            b = step % batches_per_epoch
            if b == 0 and step > 0:
                order = torch.randperm(len(tokens), generator=perm)
            idx = order[b * BATCH:(b + 1) * BATCH]
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()
            if not fixed:
                scheduler.step()                              # inside the batch loop: 0.85x every batch
            elif b == batches_per_epoch - 1:
                scheduler.step()                              # once per epoch


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
