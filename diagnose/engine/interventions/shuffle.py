"""shuffle_data: a DataLoader that reads its dataset in order reads it shuffled (tests false_negatives).

A dataset stored class by class (an ImageFolder, captions grouped per image, clips per video) and read with
`shuffle=False` gives batches of one class: every caption of a batch is the same prompt, or most of them are,
and each is scored as a negative of the others. Masking the copies (`mask_duplicates`) cannot help where a batch
holds one item only (every candidate is the positive); what the thread's users did is shuffle.

From the watch's open on, `torch.utils.data.DataLoader.__iter__` is wrapped: a map-style loader whose indices
come from a `SequentialSampler` (its `batch_sampler`'s sampler, or its own sampler where it batches nothing) gets a
`RandomSampler` over the same dataset instead, with the loader's own `generator` where it has one: what
`shuffle=True` would have built. Each later pass draws a new order, as it would. A loader already shuffling, a
sampler of the script's own (a DistributedSampler, a weighted one), an IterableDataset: left alone. The loader
must be iterated after the watch opened (a `for batch in loader:` inside the training loop is); if none was
swapped by the second `observe`, the intervention says so instead of running as a no-op.
"""

from __future__ import annotations

from typing import Any

from .base import Intervention


class ShuffleData(Intervention):
    name = "shuffle_data"
    tests = ("false_negatives",)
    changes = ("a torch DataLoader reading its dataset in order (SequentialSampler, shuffle=False) reads it in a "
               "random order, a new one each pass, from the watch's open on (its own generator where it has one: "
               "as shuffle=True would)")

    def setup(self, watch: Any) -> None:
        from torch.utils.data import DataLoader

        self._cls = DataLoader
        self._orig = DataLoader.__iter__
        self._swapped = 0
        fix = self

        def __iter__(loader):
            fix._shuffle(loader)
            return fix._orig(loader)

        DataLoader.__iter__ = __iter__

    def _shuffle(self, loader: Any) -> None:
        from torch.utils.data import RandomSampler, SequentialSampler

        batches = loader.batch_sampler
        sampler = batches.sampler if batches is not None else loader.sampler
        if type(sampler) is not SequentialSampler:  # already random, or the script's own sampler
            return
        try:
            size = len(loader.dataset)
        except TypeError:  # a dataset without a length cannot be drawn from at random (nor with shuffle=True)
            return
        new = RandomSampler(loader.dataset, generator=loader.generator)
        if batches is not None:
            batches.sampler = new
        else:  # batch_size=None: the loader's own sampler yields the indices (DataLoader guards the attribute)
            object.__setattr__(loader, "sampler", new)
        self._swapped += 1
        what = f"a DataLoader over {size} samples read in order now reads them shuffled"
        self.did.append(what)
        self.reached.append(what)

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        self.require_acted_by_second_observe(
            self._swapped, "no DataLoader reading its dataset in order (SequentialSampler) was iterated after the "
            "watch opened")

    def close(self) -> None:
        if getattr(self, "_cls", None) is not None:
            self._cls.__iter__ = self._orig
            self._cls = None
