"""The brief a blind writer of a benchmark half gets, and the list of threads already cited.

A blind half is written by helpers who see a public bug report, the README and the harness (`common.py`,
`validate.py`, the head of `run.py`), the cause ids and this brief; never the rules, probes, docs or other
halves. This script renders the brief for one writer and writes, beside it, every thread the benchmark's cases
cite (read from each case's `THREADS` without importing it), so no thread is used twice.

Usage: python benchmarks/real_faults/brief.py --half test35 --prefix la --families "optimizer setup; ..."
                                              --dir /tmp/brief
writes DIR/prompt_<prefix>.md, DIR/used_threads.txt and DIR/causes.txt.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

FAMILIES = {
    "A": "optimizer setup; mixed precision; checkpoint and resume; schedules",
    "B": "distributed; logging; data pipeline; batch and candidates",
    "C": "architecture; normalisation and temperature; frozen parts; initialisation",
}

BRIEF = """\
# Writing blind cases for a training-diagnosis benchmark

The repository /work/main holds `diagnose`, a tool that watches the training run of a vision->text alignment
model (contrastive / CLIP-style losses) and names the root cause when the loss stays flat. Its benchmark is a
set of short training scripts, each reproducing a failure that people reported in a public issue thread. You
write {n} new cases for the half `{half}`, in the folder /work/main/benchmarks/real_faults/{half}/ (create it
if it is missing). The cases are run once by the tool's authors after you finish, to measure how often the
tool names the cause on code it was not built on. So you must not see how the tool decides.

## What you may read, and what you must not

- You may read: /work/main/README.md, benchmarks/real_faults/common.py, benchmarks/real_faults/validate.py,
  the first 60 lines of benchmarks/real_faults/run.py, {dir}/causes.txt (the cause ids a case may name),
  {dir}/used_threads.txt, the installed peer libraries' sources (flamingo_pytorch, perceiver_pytorch,
  transformers, open_clip, torch) and public threads through the search tools (corpus "issues" for GitHub
  issue and pull-request threads, "pages" for forum posts; read_file / find_string / fetch).
- You must not read or list: anything under diagnose/, probes/, docs/, tests/, reports/, reference_models/;
  any other folder of benchmarks/real_faults/ than {half}/ (dev/, test*/, healthy.py, results-*.json,
  ablate.py, script.py, replay.py, table.py); `git log`, `git show`, `git diff`; any file in {half}/ that is
  not yours. Do not run run.py, ablate.py or the `diagnose` command. Do not commit or `git add`.

## The cases

Write one case per family in: {families}. Name each
`case_{prefix}_<short_name>.py`. For each:

1. Find a public thread (GitHub issue or PR, or a forum post) in which someone's training did not learn (loss
   flat at chance, collapse, no improvement) and the thread found the cause. The failure must fit the family.
   Cite 1-3 threads you actually read, as `owner/repo#N` (or the forum URL without https://). **No thread in
   {dir}/used_threads.txt may be cited** (check each with `grep -x`).
2. Reproduce the failure as the user wrote it, in a vision->text alignment setting at tiny scale: the models of
   common.py (`ResamplerAligner`, `PerceiverAligner`, `tiny_clip`), or peer models built from configs with
   random weights (flamingo-pytorch, perceiver-pytorch, transformers, open_clip with `pretrained=None`), data
   from `token_pairs` / `image_caption_pairs`. CPU only, seeded, no download, 100 steps in under a minute. A
   distributed setup is emulated in one process (as if DDP's ranks ran side by side; say how in the docstring).
   Write the mistake the way the thread's user made it, in ordinary code: not a caricature and no comment in
   the code that points at it. The script must not know about the tool beyond the watch calls below.
3. The script defines `THREADS` (a tuple of strings), `CAUSE` (one id of causes.txt: the cause a correct
   diagnosis names), `FAMILY` (its family, as written above), and
   `def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None`, where `fixed=True` applies
   the thread's fix and changes nothing else. Inside: `session = watch(model, optimizer, batch_size=B)` (add
   `candidates=N` when features are gathered), then on every step
   `session.observe(step, losses={{"clip": loss}}, embeddings={{"image": img, "text": txt}}, logits=logits,
   batch_size=B)` after `backward()` and before `optimizer.step()`, and `session.close()` at the end. Use
   only the keywords of `observe` that the README documents; **validate.py's stand-in watch accepts ANY
   keyword, so a wrong one passes there and fails under the real tool**: check every keyword against the
   README.
4. A module docstring in this shape: one-paragraph summary; "What the user did: ..."; "What went wrong and
   why: ..." (the mechanism, with the threads' words quoted where they help); "The fix: ..."; "Validation
   (validate.py, 100 steps, B = .., chance ln(B) = ..; final loss / ln(B)):" with the fault's and the fixed
   run's numbers for seeds 0, 1, 2; "Ground truth: <cause id>."
5. Validate without the tool: `cd /work/main && .venv/bin/python benchmarks/real_faults/validate.py --half
   {half} --only case_{prefix}_<short_name>`. The fault must not learn on all three seeds (final / ln(B) near
   1 or above, or clearly stuck) and the fixed run must learn (final / ln(B) below 0.5) on all three. If it
   does not, change the setting (lr, batch, steps stay 100) until the thread's mechanism shows, not by making
   the fault absurd.

Before you finish, check every entry of each case's THREADS against {dir}/used_threads.txt (`grep -x`), and
that the four files import and validate. Your closing message is one line: "{n} cases written in {half}
({prefix})". Do not describe the cases in it.
"""


def cited_threads(root: Path = HERE) -> list[str]:
    """Every string in the `THREADS` tuples of the case scripts under `root` (parsed, never imported)."""
    out: set[str] = set()
    for path in sorted(root.glob("*/case_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "THREADS" for t in node.targets):
                value = node.value
                items = value.elts if isinstance(value, (ast.Tuple, ast.List)) else [value]
                out.update(i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str))
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--half", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--families", required=True, help="a key of FAMILIES (A, B, C) or the families' text")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/brief"))
    parser.add_argument("--cases", type=int, default=4)
    args = parser.parse_args(argv)
    from diagnose.core.rules.causes import CAUSES

    families = FAMILIES.get(args.families, args.families)
    args.dir.mkdir(parents=True, exist_ok=True)
    threads = cited_threads()
    (args.dir / "used_threads.txt").write_text("\n".join(threads) + "\n")
    (args.dir / "causes.txt").write_text("\n".join(f"{c.id}: {c.title}" for c in CAUSES) + "\n")
    text = BRIEF.format(n=args.cases, half=args.half, prefix=args.prefix, families=families, dir=args.dir)
    (args.dir / f"prompt_{args.prefix}.md").write_text(text)
    print(f"{args.dir / f'prompt_{args.prefix}.md'}: {len(threads)} threads listed as used")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
