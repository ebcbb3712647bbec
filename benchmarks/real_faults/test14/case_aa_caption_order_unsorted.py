"""A user prepares an aligner's training set from two sources: precomputed patch-token features, one file per image
(`00042.pt`), read in `sorted(os.listdir(feature_dir))` order, and a captions file, a JSON object mapping each image
file name to its caption, exported in annotation order (the order the captions were written, not the file order). The
two lists are zipped by position: `captions = list(json.load(f).values())`. Nothing fails: both lists have the same
length and every tensor has the right shape, but caption i no longer describes image i, there is no shared signal
between the two towers, and the contrastive loss stays at ln(B). The thread on the same mistake with labels: "The
\"os.listdir(data_path + '/' + dataset)\" doesn't seems to list the directories alphabetically in ascending order ...
would likely to create mismatch between the assigned labels and the actual labels. The way around this is to sort
img_list before you read the images."
Thread: anujshah1003/own_data_cnn_implementation_keras#4 ("create mismatch between the assigned labels and the actual
labels"; "sort img_list before you read the images").
Fix: sort both sides by file name before pairing them, as the thread does (`[c for _, c in sorted(captions.items())]`).
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss
3.459/3.441/3.492 (= 1.00/0.99/1.01 ln(B), ln(32) = 3.466); fixed 0.084/0.096/0.089 (= 0.02/0.03/0.03 ln(B), ln(32) =
3.466).
Ground truth: misaligned_pairs.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import ResamplerAligner, token_pairs

THREADS = ("anujshah1003/own_data_cnn_implementation_keras#4",)
CAUSE = "misaligned_pairs"
FAMILY = "data_pipeline"
BATCH = 32


def load_sources(seed):
    """What is on disk: one feature tensor per image file, and the captions JSON in annotation order."""
    tokens, texts = token_pairs(1024, seed=seed)
    names = [f"{i:05d}.pt" for i in range(len(tokens))]
    features = dict(zip(names, tokens))                         # feature_dir/<name>
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(1000 + seed)).tolist()
    captions = {names[i]: texts[i] for i in order}               # captions.json, annotation order
    return features, captions


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    features, captions = load_sources(seed)
    files = sorted(features)                                     # sorted(os.listdir(feature_dir))
    tokens = torch.stack([features[f] for f in files])
    if fixed:
        texts = torch.stack([c for _, c in sorted(captions.items())])
    else:
        texts = torch.stack(list(captions.values()))
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            labels = torch.arange(BATCH)
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
