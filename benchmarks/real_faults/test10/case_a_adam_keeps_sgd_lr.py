"""The user switches the recipe's optimizer from SGD to Adam (`--optim adam`) but keeps the SGD learning rate the
config sets by default (1.0): every Adam step then moves each weight by about 1.0 whatever its gradient, the
resampler's and projections' weights jump far past their own scale on the first steps, and the aligner never settles
into a pair structure. OpenNMT-py#805: "When using adam optimizer the ppl stays a high constant value" ... "you need to
set the learning_rate to 0.001, by default it's 1 because default optim is sgd"; language-modeling#3: "the loss during
training didn't really went down ... you use learning rate of 1.0 in the config file. After I use Adam optimizer with
it's default learning rate (which is 0.001), the training get much better".
Thread: OpenNMT/OpenNMT-py#805 ("by default it's 1 because default optim is sgd"); rajveermalviya/language-modeling#3
("you use learning rate of 1.0 in the config file").
Fix: give Adam its own learning rate (lr=1e-3) instead of the SGD default 1.0.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.1589/4.1589/4.1589 (= 1.000/1.000/1.000 ln(64); seed 0 checked by hand: the image embeddings are one vector, mean
cosine 1.0, from step 10, the log-scale driven to -4.9); fixed 0.2090/0.2257/0.2141 (0.050/0.054/0.051 ln(64)).
Ground truth: learning_rate_too_high.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("OpenNMT/OpenNMT-py#805", "rajveermalviya/language-modeling#3")
CAUSE = "learning_rate_too_high"
FAMILY = "optimizer_schedule"
BATCH = 64

CONFIG = {"optim": "adam", "learning_rate": 1.0, "max_grad_norm": None}   # learning_rate: the SGD default, left as is


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    lr = 1e-3 if fixed else CONFIG["learning_rate"]    # the fix: Adam's own lr, not the SGD default
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
