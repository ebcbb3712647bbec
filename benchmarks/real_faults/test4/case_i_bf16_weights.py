"""Pure-bf16 training: the whole model is cast with `.to(torch.bfloat16)` to save memory, so AdamW applies its
updates to bf16 weights, and at a usual fine-tuning lr (1e-4) most updates are smaller than the spacing between
neighbouring bf16 numbers and round back to the old weight. The loss sits at chance while the same script with fp32
weights (bf16 only inside autocast) learns. Reports: "I manually loaded all the model with self.model =
self.model.to(dtype=torch.bfloat16), and after training for the same number of steps, the generator is unable to
converge" (maintainer: "the original unshared parameter is always store with the dtype before wrapping. so all those
parameter update / etc.. will suffer if we cast it to bfloat16"); "when I forcibly put the entire model in bf16, the
loss decreases much more slowly"; "the second moment and the model weights need to be kept in float32". Mechanism:
bf16 keeps 8 significant bits, so a weight of magnitude ~0.1 has a spacing of ~4.9e-4 and any step below ~2.4e-4 is
lost; an Adam step is ~lr = 1e-4. Measured on seed 0: after 120 steps 75.7% of the weight elements are bit-identical
to their init (0.4% with fp32 weights), median relative change per tensor 0.021 (0.053 with fp32), and logit_scale
stays at 2.65625. The lr is too low for weights stored in bf16 (at lr 3e-4 the bf16 run does learn): the effective
step is zero.
Thread: tianweiy/CausVid#19 ("after training for the same number of steps, the generator is unable to converge");
hp-l33/AiM#10 ("when I forcibly put the entire model in bf16, the loss decreases much more slowly");
google-research/big_vision#41 ("the second moment and the model weights need to be kept in float32").
Fix: keep the model in fp32 (`dtype = torch.float32`) and let the bf16 autocast do the low-precision compute.
Validated without the tool (seeds 0,1,2; 120 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.260/3.802/3.874 (= 1.024/0.914/0.932 ln(64)); fixed 1.283/1.171/1.181 (= 0.309/0.282/0.284 ln(64)).
Ground truth: learning_rate_too_low.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, token_pairs, clip_loss

THREADS = ("tianweiy/CausVid#19", "hp-l33/AiM#10", "google-research/big_vision#41")
CAUSE = "learning_rate_too_low"
FAMILY = "precision"
BATCH = 64


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    g = torch.Generator().manual_seed(seed)
    # the bug: the whole model cast to bf16 "to save memory", so AdamW updates the bf16 weights in place;
    # the fix keeps fp32 weights and runs the forward under bf16 autocast (mixed precision)
    dtype = torch.float32 if fixed else torch.bfloat16
    model = ResamplerAligner().to(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)  # a usual fine-tuning lr
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            tok, txt_in = tokens[idx].to(dtype), texts[idx].to(dtype)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                img, txt = model(tok, txt_in)
                logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits.float())
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
