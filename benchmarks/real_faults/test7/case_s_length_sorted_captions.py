"""A collate_fn carried over from an RNN image-caption pipeline sorts each batch's captions by length, longest first,
because `pack_padded_sequence` wants them sorted, and stacks the images in dataset order. Nothing errors: every
caption is still a caption from the batch, just not the one of the image in the same row. The threads: PyTorch users
sorting one side of a pair ("sorting them both may cause the src and mt sentences to be misaligned",
pytorch/pytorch#2615), a text-to-image repo whose `prepare_data` sorts the batch by caption length while the bboxes
keep their order ("But shouldn't you change the bbox order as well then?" / "yes, then they would have to be sorted
which I forgot to do here", tohinz/semantic-object-accuracy-for-generative-text-to-image-synthesis#14), and ParlAI's
caption-retrieval agent, whose batchify sorted the texts but not a field that travels with them ("The lengths weren't
ordered in the same order as the text fields", facebookresearch/ParlAI#966). Here the text tower is a transformers
CLIP text model (tiny config, random weights) fed padded captions of 3-7 words plus EOS; the sort permutes almost
every row of each batch, so the diagonal the CLIP loss rewards pairs images with other images' captions.
Thread: pytorch/pytorch#2615 ("sorting them both may cause the src and mt sentences to be misaligned");
tohinz/semantic-object-accuracy-for-generative-text-to-image-synthesis#14 ("shouldn't you change the bbox order as
well then?"); facebookresearch/ParlAI#966 ("The lengths weren't ordered in the same order as the text fields").
Fix: `pixels = pixels[order]` (apply the captions' sort order to the images too).
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.1581/4.1568/4.1582 (= 1.000/0.9995/1.000 ln(64), ln(64) = 4.1589: at chance); fixed 1.2282/1.0887/0.9955
(0.295/0.262/0.239 ln(64)).
Ground truth: misaligned_pairs.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import SEQ, clip_loss, image_caption_pairs, tiny_clip

THREADS = ("pytorch/pytorch#2615", "tohinz/semantic-object-accuracy-for-generative-text-to-image-synthesis#14",
           "facebookresearch/ParlAI#966")
CAUSE = "misaligned_pairs"
FAMILY = "data_pipeline"
BATCH = 64


def make_dataset(n: int = 1024):
    pixels, ids = image_caption_pairs(n, seed=0)
    g = torch.Generator().manual_seed(2)
    lengths = torch.randint(3, SEQ, (n,), generator=g)          # words per caption, EOS after them, then padding
    out = torch.zeros_like(ids)
    for i, L in enumerate(lengths.tolist()):
        out[i, :L] = ids[i, :L]
        out[i, L] = ids[i, -1]                                    # EOS
    return pixels, out, lengths + 1


def collate(pixels, ids, lengths, fixed):
    order = torch.argsort(lengths, descending=True, stable=True)  # for pack_padded_sequence
    ids, lengths = ids[order], lengths[order]
    if fixed:
        pixels = pixels[order]
    return pixels, ids, lengths


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels_all, ids_all, len_all = make_dataset()
    model = tiny_clip(seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randperm(len(ids_all), generator=g)[:BATCH]
            pixels, ids, lengths = collate(pixels_all[idx], ids_all[idx], len_all[idx], fixed)
            out = model(input_ids=ids, pixel_values=pixels, attention_mask=(ids != 0).long())
            img, txt = out.image_embeds, out.text_embeds
            logits = out.logits_per_image
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=pixels.flatten(1), extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
