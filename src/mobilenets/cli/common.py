"""Arguments several sub-commands share, and the model they describe."""

from __future__ import annotations

import argparse

from ..models import MobileNet, create_model


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model name (see `mobilenets list`)")
    parser.add_argument("--width-mult", type=float, default=1.0, help="width multiplier α (default 1.0)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default 1000)")
    parser.add_argument(
        "--padding", choices=("symmetric", "tf_same"), default="symmetric", help="conv padding rule"
    )


def model_from_args(args: argparse.Namespace) -> MobileNet:
    return create_model(
        args.model, width_mult=args.width_mult, num_classes=args.num_classes, padding=args.padding
    )
