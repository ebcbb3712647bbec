"""Class-prompt contrastive fine-tuning on a class-sorted dataset with the loader's default `shuffle=False`:
every batch holds one class, so all its captions are the same prompt and every other row is a false
negative; the loss is pinned at ln(B).

What the user did (Deci-AI/super-gradients#416): trained on an ImageFolder-style dataset with the library's
default dataloader params, which did not pass `shuffle=True`, so a SequentialSampler was built: "it makes NN
see only examples of a single class ... Passing shuffle=True to the dataloader params solves the issue"
(issue closed). The mechanism for a loss over normalised features is the one
happynear/NormFace#4's author spells out: "If you do not shuffle the data, all the data in one batch may
have the same label ... This would cause the network learn nothing in a batch. Please keep in mind always
shuffle your data during training."

Here the same loader feeds a vision->text contrastive fine-tune in the common classification-as-retrieval
style: each image is paired with its class prompt ("a photo of a {class}": one fixed caption feature per
class), 64 classes x 32 images, stored class by class. With the sequential sampler and B = 32 every batch is
a single class: the 32 captions are identical, so in image->text every row's softmax is over 32 equal logits
(loss exactly ln 32 whatever the model does) and in text->image 32 identical rows must each pick a different
image (best achievable: uniform, ln 32). The in-batch "negatives" are all positives of the same prompt;
nothing the optimizer does can lower the loss; the only gradient left makes the class's images equally
similar to their prompt.

Fix (the thread's): `shuffle=True`; batches then mix ~25 classes and the prompts separate the images.

Model: perceiver-pytorch Perceiver over frozen patch tokens + MLP text tower (common.PerceiverAligner),
AdamW lr 1e-3, batch 32, 100 steps.

Validation (validate.py, final loss / ln(32), seeds 0 1 2):
    fault: 1.0000, 1.0000, 1.0000 (3.4657 = ln 32 on every step from the first)
    fixed: 0.1051, 0.0947, 0.1039

Ground truth: false_negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from common import T, D, PerceiverAligner, token_pairs

THREADS = ("Deci-AI/super-gradients#416", "happynear/NormFace#4")
CAUSE = "false_negatives"
FAMILY = "batch and candidates"

CLASSES, PER_CLASS, B = 64, 32, 32


def class_dataset(seed: int) -> TensorDataset:
    """ImageFolder order: class 0's images, then class 1's, ... Each image: its class's frozen patch tokens
    plus per-image variation; its caption: the class prompt's (frozen) text feature."""
    proto_tokens, prompts = token_pairs(CLASSES, seed=seed)
    g = torch.Generator().manual_seed(seed + 7)
    labels = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    tokens = proto_tokens[labels] + 0.5 * torch.randn(len(labels), T, D, generator=g)
    return TensorDataset(tokens, prompts[labels], labels)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    dataset = class_dataset(seed)
    loader = DataLoader(dataset, batch_size=B, shuffle=fixed, drop_last=True,
                        generator=torch.Generator().manual_seed(seed + 1))
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        for tokens, captions, _ in loader:
            img, txt = model(tokens, captions)
            logits = model.logit_scale.exp() * img @ txt.t()
            labels = torch.arange(len(img))
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B, inputs=tokens)
            optimizer.step()
            step += 1
            if step == steps:
                break
    session.close()
