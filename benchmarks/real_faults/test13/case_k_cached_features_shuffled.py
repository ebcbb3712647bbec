"""A user trains an aligner on top of a frozen vision backbone and, to save time, caches the backbone's patch tokens
once ("bottleneck features"): they run the frozen backbone over the image set with the same DataLoader settings as
training, `shuffle=True`, concatenate the outputs, and then pair `cached[i]` with caption `i` of the dataset. The
cache is in the loader's random order, the captions are in dataset order, so every cached image sits next to an
unrelated caption: the pairs carry no shared signal and the contrastive loss stays at ln(B) whatever the model. The
keras PR shows the same pattern (features from a generator with `shuffle=True`, labels from `generator.classes` in
directory order): "If I do as follows, `to_categorical()` will return wrong labels because data is shuffled"; Chollet's
answer: "The proper solution here is not to use `shuffle` in `predict_generator`."
Thread: keras-team/keras#7520 ("`to_categorical()` will return wrong labels because data is shuffled"; "The proper
solution here is not to use `shuffle` in `predict_generator`").
Fix: extract the cached features with `shuffle=False`, so cache row i is image i.
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss
3.447/3.425/3.444 (= 0.99/0.99/0.99 ln(B), ln(32) = 3.466); fixed 0.115/0.156/0.124 (= 0.03/0.05/0.04 ln(B), ln(32) =
3.466).
Ground truth: misaligned_pairs.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import D, PerceiverAligner, clip_loss, token_pairs

THREADS = ("keras-team/keras#7520",)
CAUSE = "misaligned_pairs"
FAMILY = "data_pipeline"
BATCH = 32


def cache_backbone_features(images, seed, shuffle):
    """Run the frozen backbone (a fixed stand-in here) once over the image set and keep its patch tokens."""
    torch.manual_seed(seed + 1)
    backbone = torch.nn.Linear(D, D)
    torch.nn.init.eye_(backbone.weight)
    torch.nn.init.zeros_(backbone.bias)
    backbone.requires_grad_(False)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size=128, shuffle=shuffle,
                                         generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return torch.cat([backbone(x) for (x,) in loader])


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    images, texts = token_pairs(1024, seed=seed)
    tokens = cache_backbone_features(images, seed, shuffle=not fixed)   # same loader settings as training
    torch.manual_seed(seed)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
