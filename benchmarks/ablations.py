"""The seed's four accuracy claims (`mobilenets ablate`), one recipe per data set, into docs/ablation.md.

Presets (the same recipe for every arm of every claim; the claim's own model):

- ``digits``: scikit-learn's digits, width 0.5, 32 px, 10 epochs, 3 seeds: minutes per claim, and
  179 validation images (one image is 0.56 points), so only large effects show.
- ``cifar10``: the full CIFAR-10 (50,000 / 10,000) at 32 px with the stem's stride dropped, width 0.5,
  10 epochs, batch 128, SGD 0.1, weight decay 5e-4, label smoothing 0.1, 3 seeds: 9-12 minutes per run
  on 2 cores, so 1.2 hours for a claim of two arms (the budget is chosen so a claim fits in one
  sitting; the separable claim runs at width 0.25, see ``CLAIM_OPTIONS``). Runs resume: start it
  again after an interruption.

Each claim's report (``runs/ablate/PRESET/CLAIM/ablation.{md,json,png}``) is written as it finishes;
``--markdown`` copies its table into ``docs/ablation.md`` (markers ``ablation-PRESET-CLAIM``), stamped
with the claim's time: its runs' logged training and evaluation time, or this invocation's wall time if
longer, so a resumed claim states what it cost in all.

    python benchmarks/ablations.py digits [CLAIM ...] [--markdown]     # ~15 minutes on 2 cores
    python benchmarks/ablations.py cifar10 [CLAIM ...] [--markdown]    # 1.2-2 hours per claim; one by one
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _report import add_markdown_argument, provenance, write_fragments
from _shared import CIFAR10, SHARED
from mobilenets.ablation import CLAIMS, get_claim, run_ablation, write_report
from mobilenets.ablation.report import markdown

PRESETS: dict[str, dict[str, Any]] = {
    "digits": {"data": "digits", "epochs": 10, "seeds": 3, "train_options": {"width_mult": 0.5}},
    "cifar10": {
        "data": f"cifar10:{CIFAR10}",
        "epochs": 10,
        "seeds": 3,
        "train_options": {
            "width_mult": 0.5, "small_input": 1, "img_size": 32, "batch_size": 128, "lr": 0.1,
            "warmup_epochs": 1.0, "weight_decay": 5e-4, "label_smoothing": 0.1,
        },
    },
}  # fmt: skip
# Per-claim changes to a preset, the same for every arm of that claim: the standard-conv twin costs
# 8x the mult-adds (99.5M at width 0.5 against 12.2M), so at width 0.5 its three runs alone would take
# hours; at width 0.25 the whole claim takes about as long as the others.
CLAIM_OPTIONS: dict[tuple[str, str], dict[str, Any]] = {("cifar10", "separable"): {"width_mult": 0.25}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", choices=tuple(PRESETS))
    parser.add_argument("claims", nargs="*", help=f"claims to run: {', '.join(CLAIMS)} (default: all four)")
    add_markdown_argument(parser, "ablation.md")
    args = parser.parse_args()
    unknown = [name for name in args.claims if name not in CLAIMS]
    if unknown:
        parser.error(f"unknown claims {unknown}; expected some of {', '.join(CLAIMS)}")
    preset = PRESETS[args.preset]
    for name in args.claims or list(CLAIMS):
        started = time.perf_counter()
        out = Path("runs/ablate") / args.preset / name
        options = {**preset["train_options"], **CLAIM_OPTIONS.get((args.preset, name), {})}
        report = run_ablation(get_claim(name), out=out, **{**preset, "train_options": options})
        data = write_report(report, out)
        table = markdown(data).split("\n", 2)[2].strip().replace(str(SHARED), "../shared")  # no title
        # The runs' own time from their logs: a resumed or already finished claim still states it whole.
        trained = sum(arm["train_seconds"] for arm in data["arms"].values())
        text = f"{provenance(max(trained, time.perf_counter() - started))}\n\n{table}"
        print(f"\n{text}\n", flush=True)
        write_fragments(args.markdown, {f"ablation-{args.preset}-{name}": text})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
