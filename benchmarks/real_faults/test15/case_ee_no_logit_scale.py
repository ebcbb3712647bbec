"""A user trains a small CLIP (transformers CLIPModel, both towers from scratch) with a hand-written
loop. Following a blog post they L2-normalise the image and text features and feed the cosine
similarities straight into the symmetric cross-entropy: `logits = img @ txt.t()`, i.e. temperature 1;
the model's own `logit_scale` is never used. The loss falls a little in the first steps and then sits
at about 0.8 ln(B) however long they train; retrieval stays poor. In the threads the maintainers point
out that cosine logits are capped to [-1, 1], too little dynamic range for a softmax over the batch,
and that the learnable temperature (initialised at 1/0.07) is what gives it that range.

Thread: openai/CLIP#48 ("the dot products are capped between [-1, 1], which might not have the enough dynamic range")
Thread: huggingface/transformers#13430 ("not initializing the `logits_scale` to the right value could cause issues")
Fix: logits = model.logit_scale.exp() * img @ txt.t()
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss 3.40/3.47/3.44 (= 0.817/0.833/0.827 ln(B)); fixed 1.02/0.93/0.97 (= 0.245/0.223/0.233 ln(B)).
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("openai/CLIP#48", "huggingface/transformers#13430")
CAUSE = "temperature"
FAMILY = "normalisation_temperature"
BATCH = 64


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(1024, seed=seed)
    model = tiny_clip(seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(pixels), (BATCH,), generator=g)
            img = model.visual_projection(model.vision_model(pixel_values=pixels[idx]).pooler_output)
            txt = model.text_projection(model.text_model(input_ids=ids[idx]).pooler_output)
            img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
            if fixed:
                logits = model.logit_scale.exp() * img @ txt.t()
            else:
                logits = img @ txt.t()  # the bug: cosine logits at temperature 1, logit_scale never applied
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, extras={"logit_scale": model.logit_scale.exp().detach() if fixed else 1.0})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
