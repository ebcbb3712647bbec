"""A warm-up + linear-decay schedule sized in epochs but stepped every batch. The user builds
`get_linear_schedule_with_warmup(opt, num_warmup_steps=int(0.1 * total), num_training_steps=total)` with
`total = EPOCHS` and calls `scheduler.step()` after every optimizer step, as the transformers examples do. The
schedule therefore gets int(0.1 * 8) = 0 warm-up steps and decays the learning rate linearly to exactly 0 by
batch 8, inside the first epoch; every later step has lr 0 and the loss stays wherever those 8 updates left it.
Threads: shirley-wu/cross-doc-misinfo-detection#1 (on `get_linear_schedule_with_warmup`: "should the
num_training_steps be num_training_steps = args.num_epochs * len(dataloader_train) / args.accum-step? since
every args.accum-step steps, the LR scheduler runs once"; maintainer: "These are indeed bugs");
sthalles/SimCLR#8 (a contrastive trainer whose cosine schedule length was counted in the wrong unit:
"lr will nerver change until 'len(train_loader)' epochs but not steps").
Fix: `total = EPOCHS * len(loader)` (the schedule counts optimizer steps).
Validated without the tool (seeds 0,1,2; 96 steps = 8 epochs of 12 batches; batch 64; final = mean of the last 5
steps): fault final loss 3.5014/3.4356/3.9027 (= 0.842/0.826/0.938 x ln(B)); fixed 0.3821/0.2844/0.4174 (=
0.092/0.068/0.100 x ln(B)); ln(B) = 4.1589.
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
from transformers import get_linear_schedule_with_warmup
from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("shirley-wu/cross-doc-misinfo-detection#1", "sthalles/SimCLR#8")
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 64


def train(watch, steps: int = 96, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(768, seed=seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens, texts), batch_size=BATCH,
                                         shuffle=True, drop_last=True)
    epochs = math.ceil(steps / len(loader))
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    total = epochs * len(loader) if fixed else epochs
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=int(0.1 * total), num_training_steps=total)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        for epoch in range(epochs):
            for tok, txt_in in loader:
                if step >= steps:
                    break
                img, txt = model(tok, txt_in)
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, inputs=tok)
                opt.step()
                sched.step()
                step += 1


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
