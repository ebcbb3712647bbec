"""The L2 normalisation before the CLIP logits written by hand on the wrong axis:
`img = img / img.norm(dim=0, keepdim=True)` (and the same for the text rows), copied from code that keeps features
as (dim, batch) columns. Nothing fails: each embedding *dimension* gets unit norm across the batch, the rows (the
embeddings that enter the logits) do not, so a row's length depends on the rest of the batch and is ~sqrt(E/B)
on average; with the logit scale at 1/0.07 the softmax never gets confident and the loss levels off far above
the run with per-row normalisation. Public fixes of exactly this axis slip: "normalize in the feature dimension
instead of dataset dimension" (facebookresearch/vissl#111), and "features of the memory bank seem to be normalized
along the spatial dimension. I believe this is a bug, maybe the dimension should be specified as '-1' instead of
dim=1" - "You are absolutely correct" (vpariza/open-hummingbird-eval#5).
Thread: facebookresearch/vissl#111 ("normalize in the feature dimension instead of dataset dimension");
vpariza/open-hummingbird-eval#5.
Fix: `norm(dim=-1, keepdim=True)` (normalise each embedding row).
Validated without the tool (seeds 0,1,2; 80 steps; batch 128; final = mean of the last 5 steps): fault final loss
2.1989/2.2212/2.2301 (= 0.453/0.458/0.460 x ln(128) = 4.8520); fixed 0.2345/0.2229/0.2709 (= 0.048/0.046/0.056 x
ln(128) = 4.8520).
Ground truth: not_normalised.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("facebookresearch/vissl#111", "vpariza/open-hummingbird-eval#5")
CAUSE = "not_normalised"
FAMILY = "architecture"
BATCH = 128


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    axis = -1 if fixed else 0  # the fault: dim=0, the batch axis
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model.encode_image(tokens[idx]), model.text(texts[idx])
            img = img / img.norm(dim=axis, keepdim=True)
            txt = txt / txt.norm(dim=axis, keepdim=True)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
