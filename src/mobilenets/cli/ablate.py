"""``mobilenets ablate CLAIM``: measure one of the seed's accuracy claims by training its arms alike."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from ..training.config import PRECISIONS
from .common import add_small_input_argument, path_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..ablation.claims import CLAIMS

    parser = sub.add_parser(
        "ablate",
        help="measure a claim of the papers: train arms that differ in one option, compare with intervals",
        description="Train every arm of CLAIM with the same recipe, budget and seeds; report per arm mean ± "
        "std of the metric, parameters, mult-adds and latency, and each difference with a 95% interval. "
        "Claims: " + "; ".join(f"{claim.name} ({claim.source})" for claim in CLAIMS.values()),
    )
    parser.add_argument("claim", choices=tuple(CLAIMS), help="the claim to measure")
    parser.add_argument("--data", default="digits", help="digits (built in), cifar10:PATH or an image folder")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs per run (default 10)")
    parser.add_argument("--seeds", type=int, default=3, help="runs per arm, seeds 0..N-1 (default 3)")
    parser.add_argument(
        "--out", type=path_argument, required=True, help="directory for the runs and the report"
    )
    parser.add_argument("--model", default=None, help="the model (default: the claim's)")
    parser.add_argument("--width-mult", type=float, default=None, help="width multiplier, every arm")
    parser.add_argument("--resolution", type=int, default=None, help="input side (default: the data's)")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch size (default 64)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: scaled)")
    parser.add_argument("--weight-decay", type=float, default=None, help="weight decay (default 4e-5)")
    parser.add_argument("--label-smoothing", type=float, default=None, help="label smoothing (default 0)")
    parser.add_argument(
        "--warmup-epochs", type=float, default=None, help="linear warm-up (default: 1, at most epochs / 10)"
    )
    parser.add_argument("--augment", default=None, help="training augmentation (default none)")
    parser.add_argument("--grad-clip", type=float, default=None, help="max grad norm (default 0: off)")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=None, help="autocast (default auto: bf16 on CUDA only)"
    )
    parser.add_argument("--workers", type=int, default=None, help="data-loading workers (default 2)")
    add_small_input_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..ablation import get_claim, run_ablation, write_report

    claim = get_claim(args.claim)
    options = {
        key: value
        for key, value in (
            ("width_mult", args.width_mult),
            ("img_size", args.resolution),
            ("batch_size", args.batch_size),
            ("lr", args.lr),
            ("weight_decay", args.weight_decay),
            ("label_smoothing", args.label_smoothing),
            ("warmup_epochs", args.warmup_epochs),
            ("augment", args.augment),
            ("grad_clip", args.grad_clip),
            ("precision", args.precision),
            ("workers", args.workers),
            ("small_input", args.small_input or None),
        )
        if value is not None
    }
    # With --json, stdout holds the JSON alone: the runs' logs go to stderr.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        report = run_ablation(
            claim, data=args.data, epochs=args.epochs, seeds=args.seeds, out=args.out, model=args.model,
            train_options=options,
        )  # fmt: skip
    data = write_report(report, args.out)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print((args.out / "ablation.md").read_text())
        print(f"wrote {data['files']['md']}, {data['files']['png']} and {data['files']['json']}")
    return 0
