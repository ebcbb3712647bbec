"""A user moving a CLIP-style aligner to multi-GPU training gathers the image and text features of all
ranks before the loss, as open_clip does, but replaces `torch.distributed.nn.all_gather` (which they could
not find in the docs) with `torch.distributed.all_gather`. That collective writes into fresh tensors and
keeps no autograd history, and the gathered list is concatenated as is, so the loss is built only from
copies: the resampler and both projections get no gradient at all, only the logit scale (outside the
gather) does. The loss stays where it started (5.3-5.8, above ln(B x world): the untrained features
score random pairs with confidence, and the scale alone moves too little). Shown on the world-size-1
debug run the user starts first (gloo, one process), where the bug is already complete.
Thread: mlfoundations/open_clip#1047 ("as I use `torch.distributed.all_gather` for distributed training,
the loss will not go down ... `torch.distributed.all_gather` does not keep tracking autograd, leadning to no
gradient calculated and flowed back to the model"); huggingface/accelerate#76 ("the `gather` method does
not propagate the history of the tensors (necessary for the backward pass)").
Fix: put the local features back into the gathered list (`gathered[rank] = x`, open_clip's
gather without grad with local features), so the local shard keeps its graph.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64 per rank, world 1; final = mean of the last 5
steps): fault final loss 5.8035/5.2549/5.2851 (= 1.395/1.264/1.271 x ln(64) = 4.1589); fixed 0.1492/0.2117/0.1541 (= 0.036/0.051/0.037 x ln(64) = 4.1589).
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import os, tempfile
import torch
import torch.distributed as dist
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("mlfoundations/open_clip#1047", "huggingface/accelerate#76")
CAUSE = "no_gradient_path"
FAMILY = "distributed"
BATCH = 64  # per rank


def gather_features(x, fixed):
    gathered = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, x)
    if fixed:
        gathered[dist.get_rank()] = x  # the local shard keeps its autograd graph
    return torch.cat(gathered, dim=0)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    own_group = not dist.is_initialized()
    if own_group:  # torchrun sets RANK/WORLD_SIZE; the debug run is one local process
        if "RANK" in os.environ:
            dist.init_process_group("gloo")
        else:
            store = os.path.join(tempfile.mkdtemp(), "store")
            dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        torch.manual_seed(seed)
        tokens, texts = token_pairs(1024 * world, seed)
        tokens, texts = tokens[rank::world], texts[rank::world]
        model = ResamplerAligner()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
        g = torch.Generator().manual_seed(seed * 100 + rank)
        with watch(model, opt, batch_size=BATCH, candidates=BATCH * world) as w:
            for step in range(steps):
                idx = torch.randint(0, len(texts), (BATCH,), generator=g)
                img, txt = model(tokens[idx], texts[idx])
                all_img, all_txt = gather_features(img, fixed), gather_features(txt, fixed)
                logits = model.logit_scale.exp() * all_img @ all_txt.t()
                loss = clip_loss(logits)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, candidates=len(all_txt), inputs=tokens[idx],
                          extras={"logit_scale": model.logit_scale.exp()})
                opt.step()
    finally:
        if own_group:
            dist.destroy_process_group()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
