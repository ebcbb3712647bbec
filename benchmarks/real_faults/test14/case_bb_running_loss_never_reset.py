"""A user trains a resampler aligner for several short epochs and logs the "epoch loss" the way many tutorials do:
`total_loss += loss.item()` every batch and `total_loss / (i + 1)` as the running loss, where `i` is the batch index
within the epoch. `total_loss = 0` sits once above the epoch loop, not inside it, so the sum keeps every earlier
epoch's losses while the divisor restarts each epoch: the logged value grows epoch after epoch (to several times
ln(B)) while the model itself learns. The user sees a loss that climbs and concludes training diverged. The
pytorch-beginner PR: "I found total_loss is accumulated during the whole epochs (100 epochs). fixed this so that
log can print right loss per epoch."
Thread: L1aoXingyu/pytorch-beginner#40 ("total_loss is accumulated during the whole epochs").
Fix: reset `total_loss = 0` at the start of every epoch, as the PR does.
Validated without the tool (seeds 0,1,2; 96 steps; batch 32; final = mean of the last 5 steps): fault final loss
4.102/3.813/3.782 (= 1.18/1.10/1.09 ln(B), ln(32) = 3.466); fixed 0.113/0.116/0.111 (= 0.03/0.03/0.03 ln(B), ln(32) = 3.466).
Ground truth: logging_misstates_loss.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("L1aoXingyu/pytorch-beginner#40",)
CAUSE = "logging_misstates_loss"
FAMILY = "logging"
BATCH = 32
STEPS_PER_EPOCH = 16


def train(watch, steps: int = 96, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    total_loss = 0.0                                        # set once, before the epochs
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            i = step % STEPS_PER_EPOCH                      # batch index within the epoch
            if fixed and i == 0:
                total_loss = 0.0                            # the PR: reset at every epoch
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            total_loss += loss.item()
            running = torch.tensor(total_loss / (i + 1))     # what the progress bar and the log show
            w.observe(step, losses={"clip": running}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
