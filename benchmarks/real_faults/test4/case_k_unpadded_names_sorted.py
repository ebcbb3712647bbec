"""A user exports frozen-backbone patch features to one file per image, named by row number without zero
padding (`0.pt`, `1.pt`, ..., `1023.pt`), and the captions to a CSV in row order. The dataset lists the feature
files with `sorted(os.listdir(...))` "so the order is deterministic" and pairs the k-th file with the k-th
caption row. `sorted` on strings is lexicographic (`0, 1, 10, 100, 1000, 1001, ..., 101, ...`), so apart
from a handful of rows every image is paired with another image's caption: the pairs carry no signal and the
aligner stays near chance. Public threads: avinashpaliwal/Super-SloMo#22 (maintainer: "There is no need for
sorted and it actually doesn't work because 11 is taken before 2. I have added zero padding"); wkentaro/labelme#989
("the order of the images is messed up when I labelled my images 0.png, 1.png, ...., 10.png, 11.png");
oripress/CCC#3 (images and targets built from two listings that are not in the same order: "the generation of
targets and images for dataset is mismatched due to a subtle bug").
Thread: avinashpaliwal/Super-SloMo#22; wkentaro/labelme#989; oripress/CCC#3.
Fix: `sorted(names, key=lambda f: int(f.split(".")[0]))` (numeric order, as the caption rows).
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final
loss 4.105/4.137/4.105 (= 0.987/0.995/0.987 ln(64)); fixed 0.230/0.296/0.295 (= 0.055/0.071/0.071 ln(64)).
Ground truth: misaligned_pairs.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from torch.utils.data import DataLoader, Dataset
from common import PerceiverAligner, token_pairs, clip_loss

THREADS = ("avinashpaliwal/Super-SloMo#22", "wkentaro/labelme#989", "oripress/CCC#3")
CAUSE = "misaligned_pairs"
FAMILY = "data_labels"
BATCH = 64
N = 1024


class FeatureCaptionDataset(Dataset):
    """`files`: {file name: patch features} as read from the feature folder; `captions`: the CSV rows."""

    def __init__(self, files: dict, captions: torch.Tensor, fixed: bool):
        names = list(files)                                   # os.listdir order
        if fixed:
            self.names = sorted(names, key=lambda f: int(f.split(".")[0]))
        else:
            self.names = sorted(names)                        # the bug: "10.pt" < "2.pt"
        self.files, self.captions = files, captions

    def __len__(self):
        return len(self.names)

    def __getitem__(self, k):
        return self.files[self.names[k]], self.captions[k]


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(N, seed=seed)
    files = {f"{i}.pt": tokens[i] for i in torch.randperm(N).tolist()}   # one file per row, unpadded names
    ds = FeatureCaptionDataset(files, texts, fixed)
    loader = DataLoader(ds, batch_size=BATCH, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    model = PerceiverAligner()
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            for tok, txt_feat in loader:
                if step >= steps:
                    break
                img, txt = model(tok, txt_feat)
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, inputs=tok)
                opt.step()
                step += 1


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
