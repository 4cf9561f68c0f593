"""``mobilenets convert SRC --model NAME --out W.safetensors``: another project's weights → ours."""

from __future__ import annotations

import argparse
import json

from .common import (
    add_foreign_weight_options,
    foreign_classes,
    foreign_model_kwargs,
    foreign_sizes,
    path_argument,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "convert",
        help="convert torchvision/timm/EfficientNet-PyTorch weights to safetensors with a model card",
    )
    parser.add_argument(
        "src", type=path_argument, help="weights file (.pth/.pt read with weights_only=True, .safetensors)"
    )
    parser.add_argument("--model", required=True, help="our architecture the weights are for")
    parser.add_argument("--out", required=True, type=path_argument, help="output .safetensors file")
    add_foreign_weight_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object describing the result")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..weights.load import convert

    kwargs = {**foreign_model_kwargs(args), **foreign_sizes(args), "classes": foreign_classes(args)}
    trained = convert(args.src, args.out, model=args.model, source=args.source, preset=args.preset, **kwargs)
    card = trained.card
    result = {
        "out": str(args.out),
        "model": card.model,
        "model_kwargs": dict(card.model_kwargs),
        "source": card.source,
        "parameters": sum(p.numel() for p in trained.model.parameters()),
        "num_classes": len(card.classes),
        "preprocess": {
            "resize_size": card.preprocess.resize_size,
            "crop_size": card.preprocess.crop_size,
            "interpolation": card.preprocess.interpolation,
            "mean": list(card.mean),
            "std": list(card.std),
        },
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"wrote {args.out}: {card.model}({json.dumps(dict(card.model_kwargs))}) from {card.source} "
            f"weights, {result['parameters']:,} parameters, {len(card.classes)} classes, preprocessing "
            f"resize {card.preprocess.resize_size} {card.preprocess.interpolation} → crop "
            f"{card.preprocess.crop_size}"
        )
    return 0
