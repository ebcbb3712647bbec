"""A user trains a small transformers `CLIPModel` from scratch and, following the CLIP paper ("the learnable
temperature parameter was initialized to the equivalent of 0.07"), sets `logit_scale_init_value=0.07` in the
`CLIPConfig`. The config field is the *log* of the logit scale (default 2.6592 = ln(1/0.07)); the model
multiplies the cosine logits by `logit_scale.exp()`, so the run starts at a scale of exp(0.07) = 1.07,
i.e. a temperature of ~0.93 instead of 0.07. With cosines in [-1, 1] the softmax over the batch can hardly
become confident, and at a normal lr the log-scale parameter moves by ~1e-3 per step, so it stays near 1.1 for
the whole run: the loss flattens far above zero although the towers align. The same log-vs-linear confusion of
the init is reported in public threads: lucidrains/BS-RoFormer#28 ("you learn the logarithmic temperature, but
still initialize the parameter with ones instead of zeros. This means the temperature will initially be
Euler's number" - fixed by the maintainer); ExplainableML/flair#8 (why `init_logit_scale` is `np.log(1 / 0.07)`
and not `np.log(10)`: the value is a log scale).
Thread: lucidrains/BS-RoFormer#28; ExplainableML/flair#8.
Fix: leave `logit_scale_init_value` at its default (ln(1/0.07) = 2.6592) instead of 0.07.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
3.331/3.328/3.340 (= 0.801/0.800/0.803 ln(64)); fixed 1.156/1.194/0.735 (= 0.278/0.287/0.177 ln(64)).
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import image_caption_pairs, tiny_clip

THREADS = ("lucidrains/BS-RoFormer#28", "ExplainableML/flair#8")
CAUSE = "temperature"
FAMILY = "initialisation"
BATCH = 64


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, input_ids = image_caption_pairs(2048, seed=seed)
    init = {} if fixed else {"logit_scale_init_value": 0.07}   # the bug: the temperature where the log scale goes
    model = tiny_clip(seed=seed, **init)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(pixels), (BATCH,))
            out = model(input_ids=input_ids[idx], pixel_values=pixels[idx], return_loss=True)
            opt.zero_grad()
            out.loss.backward()
            w.observe(step, losses={"clip": out.loss},
                      embeddings={"image": out.image_embeds, "text": out.text_embeds},
                      logits=out.logits_per_image, batch_size=BATCH,
                      extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
