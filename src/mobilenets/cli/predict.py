"""``mobilenets predict --weights W IMAGE...``: top-k classes with probabilities for each image.

``--onnx`` / ``--program`` classify with an exported file instead, through
:func:`mobilenets.deploy.load_deployed` (its card gives the classes and the preprocessing).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from ..errors import ImageSizeError, MissingFileError, UsageError
from .common import (
    add_deployed_arguments,
    add_weights_arguments,
    deployed_path,
    load_from_args,
    path_argument,
    require_classes,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("predict", help="classify images: top-k class names and probabilities")
    what = parser.add_mutually_exclusive_group(required=True)
    add_weights_arguments(parser, required=False, group=what)
    add_deployed_arguments(what)
    # "*", checked in run(): `--pretrained IMAGE` takes the image as a weights name, which argparse
    # would only report as "IMAGE is required"
    parser.add_argument(
        "images", nargs="*", type=path_argument, metavar="IMAGE", help="image files (one or more)"
    )
    parser.add_argument("--top", type=int, default=5, help="classes shown per image (default 5)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def _predictions(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Top-k entries per image; ``ValueError`` naming every unreadable image (none is classified then)."""
    from ..data.images import ImageDecodeError, decode_image_file

    exported = deployed_path(args)
    if exported is not None:
        from ..deploy.deployed import load_deployed

        network, card = load_deployed(exported)
    else:
        trained = load_from_args(args)
        network, card = trained.model, trained.card
    require_classes(card)
    classes = card.classes
    top = min(args.top, len(classes))
    transform = card.preprocess.transform()
    model = network.to(memory_format=torch.channels_last)
    results: list[dict[str, Any]] = []
    unreadable: list[str] = []
    for start in range(0, len(args.images), args.batch_size):
        paths = args.images[start : start + args.batch_size]
        images: list[torch.Tensor] = []
        for path in paths:
            try:
                images.append(transform(decode_image_file(path)))
            except ImageDecodeError as error:
                unreadable.append(str(error))
            except ImageSizeError as error:  # decoded, but its preprocessing would blow it up
                unreadable.append(f"{path}: {error}")
        if unreadable:
            continue  # the command fails: still check the remaining files, but skip the model
        batch = torch.stack(images)
        with torch.inference_mode():
            probabilities = model(batch.contiguous(memory_format=torch.channels_last)).softmax(dim=1)
        finite = probabilities.isfinite().all(dim=1).tolist()
        broken = [printable(path) for path, ok in zip(paths, finite, strict=True) if not ok]
        if broken:  # a ranking of NaNs names a class all the same
            raise UsageError(
                f"the model's outputs are not finite numbers (NaN or infinite) for {', '.join(broken[:3])}"
                f"{' and more' if len(broken) > 3 else ''}: its weights hold non-finite values or overflow"
            )
        values, indices = probabilities.topk(top, dim=1)
        for path, probs, idx in zip(paths, values.tolist(), indices.tolist(), strict=True):
            results.append(
                {
                    "image": printable(path),
                    "top": [
                        {"class": classes[i], "index": i, "probability": p}
                        for p, i in zip(probs, idx, strict=True)
                    ],
                }
            )
    if unreadable:
        raise UsageError(
            f"cannot classify {len(unreadable)} of {len(args.images)} image(s): " + "; ".join(unreadable)
        )
    return results


def printable(path: Path) -> str:
    """``path`` as text any terminal or JSON parser takes: bytes that are not UTF-8 in a file name (which
    Python keeps as lone surrogates) become ``\\xNN`` escapes."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def run(args: argparse.Namespace) -> int:
    if isinstance(args.pretrained, str) and Path(args.pretrained).is_file():
        raise UsageError(
            f"--pretrained took the file {args.pretrained!r} as the name of packaged weights; put the "
            "images before --pretrained, or write --pretrained=NAME"
        )
    if not args.images:
        raise UsageError("give at least one IMAGE file to classify")
    if args.top < 1:
        raise UsageError(f"--top must be >= 1, got {args.top}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    folders = [str(path) for path in args.images if path.is_dir()]
    if folders:
        raise UsageError(f"expected image files, got folder(s): {', '.join(folders)}")
    missing = [str(path) for path in args.images if not path.is_file()]
    if missing:
        raise MissingFileError(f"image file(s) not found: {', '.join(missing)}")
    results = _predictions(args)
    if args.json:
        print(json.dumps({"predictions": results}, allow_nan=False))
        return 0
    for result in results:
        print(result["image"])
        for rank, entry in enumerate(result["top"], start=1):
            print(
                f"  {rank}. {entry['class']:<40} {100 * entry['probability']:6.2f}%  (class {entry['index']})"
            )
    return 0
