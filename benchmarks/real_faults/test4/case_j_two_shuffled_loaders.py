"""Images and captions come from two DataLoaders, each with shuffle=True, zipped in the training loop. The user
keeps pixels and tokenised captions in two files/tensors of the same order and wraps each in its own loader
(a common pattern for "paired" folders), expecting them to stay in step. Each loader draws its own random
permutation every epoch, so row i of the image batch and row i of the caption batch are unrelated pairs: the
diagonal targets of the CLIP loss point at random captions and the transformers CLIPModel cannot get below
ln(B). Threads: xu-ji/IIC#86 (how does the network keep track of image pairs across several dataloaders? "It's
because the order of data in each dataloader is the same across them (no shuffling. Or, deterministic/constant
shuffling)"); junyanz/pytorch-CycleGAN-and-pix2pix#1263 ("shuffling the dataloader however, will only change the
order the pair is accessed ... using a zip of 2 dataloaders for A and B with shuffling might have an impact").
Thread: xu-ji/IIC#86; junyanz/pytorch-CycleGAN-and-pix2pix#1263.
Fix: one DataLoader over TensorDataset(pixels, input_ids), shuffling the pairs together.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.1600/4.1586/4.1598 (= 1.000/1.000/1.000 ln(64)); fixed 1.1784/1.1278/0.8555 (= 0.283/0.271/0.206 ln(64)).
Ground truth: misaligned_pairs.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from torch.utils.data import DataLoader, TensorDataset
from common import image_caption_pairs, tiny_clip

THREADS = ("xu-ji/IIC#86", "junyanz/pytorch-CycleGAN-and-pix2pix#1263")
CAUSE = "misaligned_pairs"
FAMILY = "data_pipeline"
BATCH = 64


def batches(make_loader):
    """Endless iteration over epochs; each new epoch re-shuffles."""
    while True:
        yield from make_loader()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, input_ids = image_caption_pairs(1024, seed=seed)
    model = tiny_clip(seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)
    if fixed:
        make_loader = lambda: DataLoader(TensorDataset(pixels, input_ids), batch_size=BATCH, shuffle=True, drop_last=True)
    else:
        make_loader = lambda: zip(DataLoader(pixels, batch_size=BATCH, shuffle=True, drop_last=True),
                                  DataLoader(input_ids, batch_size=BATCH, shuffle=True, drop_last=True))
    data = batches(make_loader)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            px, ids = next(data)
            out = model(input_ids=ids, pixel_values=px, return_loss=True)
            opt.zero_grad()
            out.loss.backward()
            w.observe(step, losses={"clip": out.loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                      logits=out.logits_per_image, batch_size=BATCH, extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
