"""A user trains a transformers CLIPModel from a config and sets `logit_scale_init_value` from the paper's
"learnable temperature ... initialized to the equivalent of 0.07": they pass log(0.07), reading the value as
a log-temperature. CLIP multiplies the cosine logits by exp(logit_scale), so the run starts at a scale of
0.07 (temperature ~14) instead of 1/0.07: logits lie within +-0.07, the softmax is near uniform and the loss
sits at ln(B). AdamW moves the log-scale by at most ~lr per step, so in 100 steps the scale stays below 0.08.
Thread: openai/CLIP#46 ("shouldn't initial temperature be `0.07` according to the paper?" - the parameter
holds log(1/temperature)); huggingface/transformers#13430 (logit_scale initialised to the wrong
value in transformers' CLIP, "the reason for loss rising?").
Fix: `logit_scale_init_value=math.log(1 / 0.07)` (the default 2.6592).
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss
3.4025/3.4000/3.4037 (= 0.982/0.981/0.982 ln(B), ln(32) = 3.466); fixed 0.9055/1.0728/0.9895 (= 0.261/0.310/0.285
ln(B)).
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from common import image_caption_pairs, tiny_clip

THREADS = ("openai/CLIP#46", "huggingface/transformers#13430")
CAUSE = "temperature"
FAMILY = "initialisation"
BATCH = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(1024, seed)
    init = math.log(1 / 0.07) if fixed else math.log(0.07)   # "temperature initialised to 0.07"
    model = tiny_clip(seed, logit_scale_init_value=init)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(ids), (BATCH,))
            out = model(input_ids=ids[idx], pixel_values=pixels[idx], return_loss=True)
            loss = out.loss
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                      logits=out.logits_per_image, batch_size=BATCH, inputs=pixels[idx],
                      extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
