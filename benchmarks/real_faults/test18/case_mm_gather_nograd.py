"""A CLIP trained with DDP gathers the image and text features of every rank before the contrastive loss, as
open_clip's gather_features does. Believing `torch.distributed.nn.all_gather` had been removed from recent torch,
the user swapped it for the plain collective `torch.distributed.all_gather` into zero buffers and concatenated
them (no local shard put back). That collective records no autograd history: every feature entering the logits
is a constant, so neither tower gets a gradient; only the logit scale moves. "The loss will not go down and is
higher than single-gpu training" (run here on a one-rank gloo group: the same code path, world size 1).
Thread: mlfoundations/open_clip#1047 ("torch.distributed.all_gather does not keep tracking autograd, leadning to no
gradient calculated and flowed back to the model"); also 3dlg-hcvc/DuoduoCLIP#10 ("when I replace dist.nn.all_gather
with dist.all_gather, it shows no gradient").
Fix: gather with the autograd-aware `torch.distributed.nn.all_gather` (`from torch.distributed.nn import all_gather`).
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final
loss 4.198/3.798/3.867 (= 1.21/1.10/1.12 ln(B), ln 32 = 3.466); fixed 0.882/0.892/0.928 (= 0.25/0.26/0.27 ln(B)).
Ground truth: distributed_gradient_missing.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.distributed as dist
import torch.nn.functional as F
from common import image_caption_pairs, tiny_clip

THREADS = ("mlfoundations/open_clip#1047", "3dlg-hcvc/DuoduoCLIP#10")
CAUSE = "distributed_gradient_missing"
FAMILY = "distributed"
BATCH = 32


def gather_features(image_features, text_features, with_grad):
    """Features of every rank, concatenated in rank order (open_clip's gather_features, gather_with_grad=True)."""
    if with_grad:
        from torch.distributed.nn import all_gather
        return (torch.cat(all_gather(image_features, group=dist.group.WORLD), dim=0),
                torch.cat(all_gather(text_features, group=dist.group.WORLD), dim=0))
    world = dist.get_world_size()
    all_image = [torch.zeros_like(image_features) for _ in range(world)]
    all_text = [torch.zeros_like(text_features) for _ in range(world)]
    dist.all_gather(all_image, image_features)
    dist.all_gather(all_text, text_features)
    return torch.cat(all_image, dim=0), torch.cat(all_text, dim=0)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        pixels, ids = image_caption_pairs(1024, seed=seed)
        model = tiny_clip(seed=seed)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(ids), generator=g)
        with watch(model, opt, batch_size=BATCH) as w:
            for step in range(steps):
                per_epoch = len(order) // (BATCH * world)
                if step and step % per_epoch == 0:
                    order = torch.randperm(len(ids), generator=g)
                start = (step % per_epoch) * BATCH * world + rank * BATCH  # DistributedSampler: this rank's shard
                idx = order[start:start + BATCH]
                img = model.visual_projection(model.vision_model(pixel_values=pixels[idx]).pooler_output)
                txt = model.text_projection(model.text_model(input_ids=ids[idx]).pooler_output)
                img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
                all_img, all_txt = gather_features(img, txt, with_grad=fixed)
                scale = model.logit_scale.exp()
                logits = scale * all_img @ all_txt.t()
                labels = torch.arange(len(logits))
                loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, candidates=len(all_img), inputs=pixels[idx],
                          extras={"logit_scale": scale})
                opt.step()
    finally:
        if own_group:
            dist.destroy_process_group()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
