"""``mobilenets eval``: accuracy of a checkpoint or of converted/foreign weights, plus a confusion plot.

Checkpoints trained here are evaluated on their data's held-out split with the training run's own
validation transform; other weights (and labelled list files) go through the weights' preset.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..atomic import unwritable_reason
from ..devices import DEVICE_HELP, resolve_device
from ..errors import UsageError
from .common import (
    add_allocator_argument,
    add_deployed_arguments,
    add_weights_arguments,
    apply_allocator,
    deployed_path,
    load_from_args,
    path_argument,
    refuse_overwriting,
    refuse_unused_split,
    require_classes,
    thread_count,
)

DEFAULT_BATCH_SIZE = 64
MAX_LISTED = 5  # class names quoted in a mismatch message
MAX_CONFUSION_CLASSES = 100  # beyond this a confusion plot (and its JSON matrix) is not worth its size
MAX_TABLE_CLASSES = 30  # per-class rows printed in the text report


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "eval", help="evaluate weights (ours or converted/foreign): top-1/top-5, per-class, confusion"
    )
    what = parser.add_mutually_exclusive_group(required=True)
    add_weights_arguments(parser, required=False, group=what)
    add_deployed_arguments(what)
    parser.add_argument(
        "--threads",
        type=thread_count,
        default=None,
        help="CPU threads, for PyTorch or the exported file's runtime (default: all cores)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="compute in fp32 (default) or bf16 (weights: PyTorch autocast; --openvino: OpenVINO's bf16; "
        "needs a CPU with bf16 instructions)",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="digits, cifar10:PATH, a folder, or a labelled list file ('IMAGE_PATH, LABEL' lines) "
        "(default: the data the checkpoint was trained on)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument(
        "--flip-tta",
        action="store_true",
        help="score the mean logits of each image and its mirror image (test-time augmentation, 2x the "
        "compute; for data trained with horizontal flips, not digits)",
    )
    parser.add_argument(
        "--shift-tta",
        type=int,
        default=0,
        metavar="PIXELS",
        help="also score each image moved PIXELS up, down, left and right (borders reflected) and "
        "average the logits (5x the compute, 10x with --flip-tta; for data trained with crops)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="evaluation batch size (default 64)")
    parser.add_argument("--workers", type=int, default=0, help="data-loading worker processes (default 0)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument(
        "--val-split",
        type=float,
        default=None,
        help="held-out fraction of one folder or digits (default: the checkpoint's)",
    )
    parser.add_argument(
        "--seed",
        "--split-seed",
        dest="split_seed",
        type=int,
        default=None,
        help="seed of the train/val split (default: the checkpoint's)",
    )
    confusion = parser.add_mutually_exclusive_group()
    confusion.add_argument(
        "--confusion",
        type=path_argument,
        default=None,
        help=f"confusion PNG (default: <weights stem>_confusion.png beside the weights, "
        f"<stem>_<suffix>_confusion.png beside an exported file; up to {MAX_CONFUSION_CLASSES} classes)",
    )
    confusion.add_argument("--no-confusion", action="store_true", help="do not write a confusion PNG")
    add_allocator_argument(parser)
    parser.set_defaults(run=run)


def _check_args(args: argparse.Namespace) -> None:
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.workers < 0:
        raise UsageError(f"--workers must be >= 0, got {args.workers}")
    if args.shift_tta < 0:
        raise UsageError(f"--shift-tta must be >= 0 pixels, got {args.shift_tta}")


def _quote(names: Sequence[str]) -> str:
    shown = ", ".join(map(repr, names[:MAX_LISTED]))
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def class_aliases(trained: Sequence[str]) -> dict[str, int]:
    """Other names of the checkpoint's classes, each with its label: the WordNet IDs of ImageNet's
    classes (``n01440764`` for tench), which name the class folders of ImageNet's own layout."""
    from ..weights.presets import imagenet_classes, imagenet_synsets

    if tuple(trained) != imagenet_classes():
        return {}
    return {synset: label for label, synset in enumerate(imagenet_synsets())}


def class_mismatch(trained: Sequence[str], found: Sequence[str]) -> str | None:
    """Why the data's classes ``found`` cannot be scored by the checkpoint's ``trained``: some are not
    the checkpoint's. None when every one is (some of them, or all in another order, are matched by
    name or :func:`class_aliases`: :func:`class_lookup`)."""
    trained, found = list(trained), list(found)
    aliases = class_aliases(trained)
    labels = {**aliases, **{name: label for label, name in enumerate(trained)}}
    extra = [name for name in found if name not in labels]
    if not extra:
        twice = [
            trained[label] for label, count in Counter(labels[name] for name in found).items() if count > 1
        ]
        if twice:  # `tench/` beside `n01440764/`: one class in two folders
            return f"classes {_quote(twice)} each have two folders in the data (a name and a WordNet ID)"
        return None
    covered = {labels[name] for name in found if name in labels}
    missing = [name for label, name in enumerate(trained) if label not in covered]
    parts = [f"the checkpoint has {len(trained)} classes, the data {len(found)}"]
    if missing:
        parts.append(f"not in the data: {_quote(missing)}")
    parts.append(f"not in the checkpoint: {_quote(extra)}")
    parts.append("a labelled list file (IMAGE_PATH, LABEL lines) scores images under the checkpoint's labels")
    return "; ".join(parts)


def class_lookup(trained: Sequence[str], found: Sequence[str]) -> torch.Tensor | None:
    """The checkpoint's label of each of the data's labels, matched by class name (or WordNet ID), when
    the data holds some of the checkpoint's classes or all of them in another order; None when they are
    the same."""
    if list(trained) == list(found):
        return None
    index = {**class_aliases(trained), **{name: label for label, name in enumerate(trained)}}
    return torch.tensor([index[name] for name in found], dtype=torch.int64)


Batch = tuple[torch.Tensor, torch.Tensor]


class _Relabelled:
    """``loader``'s batches with each label replaced by ``lookup[label]``; its ``skipped`` files too."""

    def __init__(self, loader: Any, lookup: torch.Tensor) -> None:
        self.loader, self.lookup = loader, lookup

    @property
    def skipped(self) -> Sequence[str]:
        return getattr(self.loader, "skipped", ())

    def __iter__(self) -> Iterator[Batch]:
        return ((images, self.lookup[labels]) for images, labels in self.loader)


def _print_report(report: dict[str, Any]) -> None:
    from rich.table import Table

    from ..analysis.formatting import StdoutConsole

    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}%"

    console = StdoutConsole()
    print(f"{report['model']} on {report['data']}")
    summary = Table(show_header=False)
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    summary.add_row("top-1", percent(report["top1"]))
    summary.add_row(f"top-{report['topk']}", percent(report["top5"]))
    if report["loss"] is not None:
        summary.add_row("loss", f"{report['loss']:.4f}")
    summary.add_row("images", f"{report['num_images']:,}")
    if report["precision"] != "fp32":
        summary.add_row("precision", report["precision"])
    if report["shift_tta"]:
        mirrors = " and their mirrors" if report["flip_tta"] else ""
        summary.add_row(
            "test-time augmentation", f"mean of image, its ±{report['shift_tta']} px moves{mirrors}"
        )
    elif report["flip_tta"]:
        summary.add_row("test-time augmentation", "mean of image and mirror")
    if report["skipped"]:
        summary.add_row("skipped files", f"{report['skipped']:,}")
    console.print(summary)
    if len(report["per_class"]) <= MAX_TABLE_CLASSES:
        per_class = Table(title="per-class accuracy")
        per_class.add_column("class")
        per_class.add_column("images", justify="right")
        per_class.add_column("accuracy", justify="right")
        for name, accuracy in report["per_class"].items():
            per_class.add_row(name, f"{report['per_class_images'][name]:,}", percent(accuracy))
        console.print(per_class)
    else:
        print(f"per-class accuracy of {len(report['per_class'])} classes: see --json")
    print(f"checkpoint: {report['checkpoint']}")
    if report["confusion_png"]:
        print(f"confusion matrix: {report['confusion_png']}")


def run(args: argparse.Namespace) -> int:
    from ..data.card import card_eval_set
    from ..data.splits import build_loader
    from ..evaluation.evaluate import evaluate
    from ..evaluation.plots import plot_confusion_matrix

    _check_args(args)
    apply_allocator(args)
    exported = deployed_path(args)
    if args.confusion is not None:
        if args.confusion.suffix.lower() != ".png":
            raise UsageError(f"--confusion {str(args.confusion)!r} must end in .png (the plot is an image)")
        refuse_overwriting(args.confusion, "--confusion", args.weights, exported)
        unwritable = unwritable_reason(args.confusion)  # found now, not after the whole evaluation
        if unwritable is not None:
            raise UsageError(f"--confusion {str(args.confusion)!r}: {unwritable}")
    if exported is not None and args.device not in ("auto", "cpu"):
        raise UsageError(f"--device {args.device}: exported files run on the CPU here")
    device = resolve_device(args.device)
    network: torch.nn.Module
    source_file: Path | str
    if args.threads is not None and (exported is None or args.program is not None):
        torch.set_num_threads(args.threads)  # PyTorch runs it; the other runtimes take threads themselves
    precision = args.precision
    if exported is not None:
        from ..deploy.deployed import deployed_int8, load_deployed

        network, card = load_deployed(exported, threads=args.threads, precision=args.precision)
        int8 = deployed_int8(exported)  # an int8 file is reported as such, not as the fp32 default
        if int8 is not None:
            precision = f"int8 ({int8})" if precision == "fp32" else f"int8 ({int8}), float parts {precision}"
        device, source_file = torch.device("cpu"), exported  # exported files run on the CPU here
    else:
        trained = load_from_args(args)
        card, network = trained.card, trained.model
        source_file = args.weights or f"{card.model} pretrained"
        if args.precision == "bf16":
            from ..deploy.bf16 import bf16_inference

            network = bf16_inference(network, device=device)
    require_classes(card)
    data = args.data if args.data is not None else card.data
    if args.data is None and not data:  # (an empty --data is the data spec's own error)
        raise UsageError(
            f"{str(source_file)!r} does not say what data it was trained on; give --data (a folder or a "
            "labelled list file)"
        )
    refuse_unused_split(data, {"--val-split": args.val_split, "--seed": args.split_seed})
    dataset, classes = card_eval_set(card, data, val_split=args.val_split, seed=args.split_seed)
    mismatch = class_mismatch(card.classes, classes)
    if mismatch:
        raise UsageError(f"data {data!r} does not match the weights {str(source_file)!r}: {mismatch}")
    lookup = class_lookup(card.classes, classes)
    classes = tuple(card.classes)  # the data's labels are the checkpoint's from here on
    loader = build_loader(
        dataset,
        batch_size=args.batch_size or DEFAULT_BATCH_SIZE,
        train=False,
        seed=card.seed,
        workers=args.workers,
    )
    model = network.to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    metrics = evaluate(
        model,
        loader if lookup is None else _Relabelled(loader, lookup),
        device=device,
        criterion=torch.nn.CrossEntropyLoss(),
        flip_tta=args.flip_tta,
        shift_tta=args.shift_tta,
    )
    skipped = [str(path) for path in loader.skipped]
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable file(s), e.g. {skipped[0]}", file=sys.stderr)

    confusion_png: Path | None = None
    wants_plot = args.confusion is not None or len(classes) <= MAX_CONFUSION_CLASSES
    if not args.no_confusion and wants_plot:
        source = Path(source_file)
        # An exported file's plot names its format: m.onnx and m.pte beside each other keep their own.
        stem = source.stem if exported is None else f"{source.stem}_{source.suffix.lstrip('.')}"
        target = args.confusion or source.with_name(f"{stem}_confusion.png")
        try:
            confusion_png = plot_confusion_matrix(metrics.confusion, classes, target)
        except OSError as error:
            reason = f"cannot write the confusion plot {str(target)!r}: {error.strerror or error}"
            if args.confusion is not None:
                raise UsageError(reason) from None
            # Not asked for: the evaluation is reported all the same.
            print(f"warning: {reason}; give --confusion PATH or --no-confusion", file=sys.stderr)

    report = {
        **metrics.to_dict(classes),
        "model": card.model,
        "checkpoint": str(source_file),
        "source": card.source,
        "data": data,
        "flip_tta": args.flip_tta,
        "shift_tta": args.shift_tta,
        "precision": precision,
        "skipped": len(skipped),
        "skipped_files": skipped,
        "confusion_png": None if confusion_png is None else str(confusion_png),
    }
    if len(classes) > MAX_CONFUSION_CLASSES:
        report["confusion"] = None  # a million numbers for ImageNet: see the PNG (--confusion) instead
    if args.json:
        print(json.dumps(report, allow_nan=False))
    else:
        _print_report(report)
    return 0
