"""The user builds the training logits from the `encode_image` / text-projection helpers, as in the README usage
snippet of open_clip, instead of the model's forward: those helpers return UN-normalised features, and the
learnable logit scale (exp = 14.3 at init) multiplies raw dot products. The first loss is 54-72 (vs ln(64) =
4.16), the logits are huge, and the run ends far worse than the same model with the L2 normalisation
(AdamW, lr 1e-3, weight decay 0.1).
Threads: mlfoundations/open_clip#68 ("we use model.encode_image() and model.encode_text() before computing the
dot product of the features. However those methods, by contrast with what is done during training, don't
normalize the feature vectors"); HobbitLong/SupContrast#50 ("You may want to check if your are using
F.normalize before calculating the loss function ... I missed this step and got nan." / "When I don't use l2,
the model will even explode in gradient").
Fix: `img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)` before the logits.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; final = mean of the last 5 steps): fault final loss
1.176/1.173/1.370 (= 0.283/0.282/0.329 ln(64), ln(64) = 4.159; first loss 64.6/71.9/53.8); fixed
0.196/0.207/0.201 (= 0.047/0.050/0.048 ln(64)).
Ground truth: not_normalised.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import ResamplerAligner, token_pairs, clip_loss

THREADS = ("mlfoundations/open_clip#68", "HobbitLong/SupContrast#50")
CAUSE = "not_normalised"
FAMILY = "normalisation_temperature"
BATCH = 64


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            # features taken from the encode_* helpers, as in the README usage snippet
            img = model.encode_image(tokens[idx])
            txt = model.text(texts[idx])
            if fixed:
                img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
