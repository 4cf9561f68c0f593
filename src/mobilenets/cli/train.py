"""``mobilenets train``: train a model on a small bundled dataset, with checkpoints and resume."""

from __future__ import annotations

import argparse
import json

from ..training import DATASETS, TrainConfig, train
from ..training.engine import OPTIMIZERS

_DEFAULTS = TrainConfig()


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train a model (checkpoints, metrics.jsonl, --resume)")
    parser.add_argument("--model", default=_DEFAULTS.model, help=f"model name (default {_DEFAULTS.model})")
    parser.add_argument("--width-mult", type=float, default=_DEFAULTS.width_mult, help="width multiplier α")
    parser.add_argument(
        "--data", default=_DEFAULTS.data, help=f"dataset: {', '.join(DATASETS)} (default {_DEFAULTS.data})"
    )
    parser.add_argument("--epochs", type=int, default=_DEFAULTS.epochs, help="total epochs")
    parser.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size, help="training batch size")
    parser.add_argument("--img-size", type=int, default=_DEFAULTS.img_size, help="input resolution (>= 32)")
    parser.add_argument("--lr", type=float, default=_DEFAULTS.lr, help="peak learning rate (cosine decay)")
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=_DEFAULTS.weight_decay,
        help="weight decay (none on norms, biases)",
    )
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=_DEFAULTS.optimizer)
    parser.add_argument("--label-smoothing", type=float, default=_DEFAULTS.label_smoothing)
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="seeds weights, split and shuffling")
    parser.add_argument("--out", default=_DEFAULTS.out, help=f"output directory (default {_DEFAULTS.out})")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors if present")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = TrainConfig(
        model=args.model,
        width_mult=args.width_mult,
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        img_size=args.img_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
        label_smoothing=args.label_smoothing,
        seed=args.seed,
        out=args.out,
        resume=args.resume,
    )
    result = train(config)
    print(json.dumps(result))
    return 0
