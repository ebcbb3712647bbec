"""A user writes their own image loading for CLIP fine-tuning instead of the model's image processor: each image is
decoded to a uint8 array and turned into a float tensor (`torch.from_numpy(np.array(img)).permute(2, 0, 1).float()`),
but no normalisation step (the processor's rescale-and-normalise, or any mean/std standardisation) is ever applied. The
pixels arrive in [0, 255] with a mean near 128 in every channel: one direction shared by every image (the constant
offset, hundreds of times the image-to-image variation) dominates the patch embeddings, the informative part is a
small ripple on top, and the contrastive loss stays at ln(B). The torchxrayvision thread: "I tried training another
(shallower) architecture on these data with default weight inits and I start getting `inf`s and `nan`s after the
first training iteration. When I normalized the pixels to have mean=0, std=1 then it worked fine."; the maintainer on
the raw range: "for a 8 bit image you have the range 0,256 mapped to -1024,1024".
Thread: mlmed/torchxrayvision#9 ("When I normalized the pixels to have mean=0, std=1 then it worked fine").
Fix: standardise the pixels as the thread did, `pixel_values = (pixel_values - pixel_values.mean()) / pixel_values.std()`.
Validated without the tool (seeds 0,1,2; 120 steps; batch 32; final = mean of the last 5 steps): fault final loss
3.465/3.465/3.464 (= 1.00/1.00/1.00 ln(B), ln(32) = 3.466); fixed 0.903/0.900/0.864 (= 0.26/0.26/0.25 ln(B), ln(32) = 3.466).
Ground truth: shared_input_component.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import image_caption_pairs, tiny_clip

THREADS = ("mlmed/torchxrayvision#9",)
CAUSE = "shared_input_component"
FAMILY = "data_pipeline"
BATCH = 32


def decode_images(seed):
    """The dataset's images as decoded uint8 arrays would give them: values 0..255."""
    pixels, captions = image_caption_pairs(1024, seed=seed)
    lo, hi = pixels.amin(), pixels.amax()
    raw = ((pixels - lo) / (hi - lo) * 255).round().clamp(0, 255).to(torch.uint8)
    return raw, captions


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    raw, input_ids = decode_images(seed)
    pixel_values = raw.float()                               # uint8 array -> float tensor, 0..255
    if fixed:
        pixel_values = (pixel_values - pixel_values.mean()) / pixel_values.std()
    model = tiny_clip(seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(raw), (BATCH,), generator=g)
            out = model(input_ids=input_ids[idx], pixel_values=pixel_values[idx], return_loss=True)
            opt.zero_grad()
            out.loss.backward()
            w.observe(step, losses={"clip": out.loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                      logits=out.logits_per_image, batch_size=BATCH, inputs=pixel_values[idx].flatten(1),
                      extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
