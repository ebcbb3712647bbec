"""A DDP CLIP loop that gathers the other ranks' features for more negatives (open_clip's `local_loss` with a
no-grad all_gather: rows of this rank against the columns of all 16 ranks, labels `arange(B) + rank * B`), but whose
DataLoader has no DistributedSampler: every rank shuffles with the same seed, so all 16 ranks draw the same 8 pairs
each step. The gathered 128 candidates are 16 copies of the local batch (same weights, same inputs: the copies are
identical), each row's own caption appears 16 times and only one copy counts as the positive, so the loss cannot go
below ln(16) in either direction however well the pairs align. The threads: "the way the samplers are implemented, if
using a distributed backend ... samples the same examples for all the accelerators (gpus)", "Identical Batches Across
Multiple GPUs" (fixed by passing rank and world_size to the sampler), and, for the gathering, "do you combine the
mini-batches across GPUs before applying contrastive loss (therefore the actual batchsize = n_GPUs x batchsize per
GPU)". This script is rank 0's process of that job, the other ranks' gathered (no-grad) features computed in the
same process from the batches their samplers give them; the gradient is rank 0's own (DDP would average 16 such).
Thread: openspeech-team/openspeech#149 ("samples the same examples for all the accelerators"); k2-fsa/icefall#1616
("Identical Batches Across Multiple GPUs"); microsoft/UniCL#5 ("All samples from each GPU combined before applying
contrastive loss?").
Fix: `sampler = DistributedSampler(dataset, num_replicas=WORLD, rank=rank, seed=seed)` for each rank's loader.
Validated without the tool (seeds 0,1,2; 80 steps; batch 8 per rank x 16 ranks, 128 gathered candidates, chance
ln(128) = 4.8520; final = mean of the last 5 steps): fault final loss 2.8183/2.8106/2.8094 (= 0.581/0.579/0.579
ln(128), the floor ln(16)/ln(128) = 0.571); fixed 0.3552/0.2982/0.3113 (= 0.073/0.062/0.064 ln(128)).
Ground truth: false_negatives.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, TensorDataset
from common import ResamplerAligner, token_pairs

THREADS = ("openspeech-team/openspeech#149", "k2-fsa/icefall#1616", "microsoft/UniCL#5")
CAUSE = "false_negatives"
FAMILY = "distributed"
BATCH = 8   # per rank
WORLD, RANK = 16, 0


def loaders(dataset, seed, fixed):
    out = []
    for rank in range(WORLD):
        if fixed:
            sampler = DistributedSampler(dataset, num_replicas=WORLD, rank=rank, shuffle=True, seed=seed)
        else:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))  # same seed on every rank
        out.append(DataLoader(dataset, batch_size=BATCH, sampler=sampler, drop_last=True))
    return out


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    dataset = TensorDataset(*token_pairs(2048, seed=seed))
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    step, epoch = 0, 0
    with watch(model, opt, batch_size=BATCH, candidates=WORLD * BATCH) as w:
        while step < steps:
            ranks = loaders(dataset, seed + epoch, fixed)
            for batches in zip(*ranks):
                if step >= steps:
                    break
                img, txt = model(*batches[RANK])
                with torch.no_grad():                      # dist.all_gather: the other ranks' features, no grad
                    others = [model(*b) if r != RANK else (img, txt) for r, b in enumerate(batches)]
                all_img = torch.cat([img if r == RANK else o[0] for r, o in enumerate(others)])
                all_txt = torch.cat([txt if r == RANK else o[1] for r, o in enumerate(others)])
                scale = model.logit_scale.exp()
                logits = scale * img @ all_txt.t()         # (8, 128)
                labels = torch.arange(BATCH) + RANK * BATCH
                loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(scale * txt @ all_img.t(), labels))
                opt.zero_grad(); loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          targets=labels, batch_size=BATCH, candidates=WORLD * BATCH, inputs=batches[RANK][0],
                          extras={"logit_scale": scale})
                opt.step()
                step += 1
            epoch += 1


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
