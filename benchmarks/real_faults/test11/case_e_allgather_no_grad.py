"""A user ports open_clip's gathered ClipLoss to a newer torch after reading that `torch.distributed.nn.all_gather`
"was removed in recent pytorch versions" and swaps in the plain collective `torch.distributed.all_gather`, which
returns tensors with no autograd history. open_clip's non-grad path survives this only because it puts the rank's
own features back into the gathered list (`gathered_image_features[rank] = image_features`); the port drops that
line, so every row of the (N, N) logits is a detached copy, the only leaf left in the graph is the logit scale, and
the encoders receive no gradient at all: the loss stays at chance ("the loss will not go down and is higher than
single-gpu training"). Run here under torch.distributed with the gloo backend (world size 1, the same code a torchrun
job executes on each rank).
Thread: mlfoundations/open_clip#980 ("`torch.distributed.nn.all_gather` was removed in recent pytorch versions (l'm
using 2.4.0) ... What is the best way to fix this?"); lightonai/pylate#102 ("Gather everything (queries + documents)
_without the gradients in remote elements_ ... so every elements receive their full update on their local GPUs").
Fix: put the local features back into the gathered lists (gathered_img[rank] = img; gathered_txt[rank] = txt).
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
5.750/5.343/5.272 (= 1.38/1.28/1.27 ln(B), ln(64) = 4.159); fixed 0.130/0.157/0.124 (= 0.031/0.038/0.030 ln(B)).
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import os, tempfile
import torch
import torch.distributed as dist
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("mlfoundations/open_clip#980", "lightonai/pylate#102")
CAUSE = "no_gradient_path"
FAMILY = "distributed"
BATCH = 64


def gather_features(img, txt, fixed):
    world, rank = dist.get_world_size(), dist.get_rank()
    gathered_img = [torch.zeros_like(img) for _ in range(world)]
    gathered_txt = [torch.zeros_like(txt) for _ in range(world)]
    dist.all_gather(gathered_img, img)
    dist.all_gather(gathered_txt, txt)
    if fixed: gathered_img[rank] = img; gathered_txt[rank] = txt
    return torch.cat(gathered_img), torch.cat(gathered_txt)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    store = tempfile.NamedTemporaryFile(delete=False); store.close(); os.unlink(store.name)
    dist.init_process_group("gloo", init_method=f"file://{store.name}", rank=0, world_size=1)
    try:
        torch.manual_seed(seed)
        tokens, texts = token_pairs(1024, seed=seed)
        model = ResamplerAligner()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
        g = torch.Generator().manual_seed(seed + dist.get_rank())
        with watch(model, opt, batch_size=BATCH) as w:
            for step in range(steps):
                idx = torch.randperm(len(tokens), generator=g)[:BATCH]
                img, txt = model(tokens[idx], texts[idx])
                all_img, all_txt = gather_features(img, txt, fixed)
                logits = model.logit_scale.exp() * all_img @ all_txt.t()
                loss = clip_loss(logits)
                opt.zero_grad(); loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, candidates=len(all_txt), inputs=tokens[idx])
                opt.step()
    finally:
        dist.destroy_process_group()
        if os.path.exists(store.name):
            os.unlink(store.name)


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
