"""Soft CLIP targets built from the batch's own similarities, with the temperature multiplying the target
similarities while it divides the logits. The loss is the one of the OpenAI-CLIP tutorial / BLEEP
(`logits = text @ image.T / T`, `targets = softmax((images_similarity + texts_similarity) / 2 * T)`, cross-entropy
both ways); with the tutorial's T = 1.0 the typo is harmless, but this user sets CLIP's T = 0.07. The targets then
come from cosine similarities times 0.07, i.e. values in [-0.07, 0.07]: every row of the target matrix is almost
uniform (largest/smallest probability at most e^0.14 = 1.15), so the targets no longer point at the matching pair and
the loss is minimised by making all logits of a row equal: the loss falls from ~5.5 to ln(B) and stays there.
The BLEEP report: "While logits are divided by it, targets are multiplied by this value. Is this intentional or is it
a mathematical mistake?", maintainer: "Yes this should be a mistake. Good catch. ... Luckily this shouldn't
influence results since temperature was set to 1 for all experiments."
Thread: bowang-lab/BLEEP#5 ("While logits are divided by it, targets are multiplied by this value").
Fix: `targets = softmax((images_similarity + texts_similarity) / 2 / T)`.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.161/4.161/4.162 (= 1.000/1.001/1.001 ln(64)); fixed 0.301/0.356/0.332 (= 0.072/0.086/0.080 ln(64)).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import PerceiverAligner, token_pairs

THREADS = ("bowang-lab/BLEEP#5",)
CAUSE = "wrong_targets"
FAMILY = "data_labels"
BATCH = 64
TEMPERATURE = 0.07  # the tutorial's 1.0 changed to CLIP's 0.07


def cross_entropy(preds, targets):
    return (-targets * F.log_softmax(preds, dim=-1)).sum(1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens, texts), batch_size=BATCH,
                                         shuffle=True, drop_last=True)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            for tok, txt_in in loader:
                if step >= steps:
                    break
                image_embeddings, text_embeddings = model(tok, txt_in)
                logits = (text_embeddings @ image_embeddings.T) / TEMPERATURE
                images_similarity = image_embeddings @ image_embeddings.T
                texts_similarity = text_embeddings @ text_embeddings.T
                sim = (images_similarity + texts_similarity) / 2
                # the bug: the temperature multiplies the similarity in the targets while it divides the logits
                targets = F.softmax(sim / TEMPERATURE if fixed else sim * TEMPERATURE, dim=-1)
                texts_loss = cross_entropy(logits, targets)
                images_loss = cross_entropy(logits.T, targets.T)
                loss = ((images_loss + texts_loss) / 2.0).mean()
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": image_embeddings, "text": text_embeddings},
                          logits=logits.T, targets=targets.detach(), batch_size=BATCH)  # logits.T: image -> text
                opt.step()
                step += 1


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
