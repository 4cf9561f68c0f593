"""``mobilenets train``: train a model on digits, CIFAR-10 or an image folder; also under ``torchrun``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..data.transforms import AUGMENTATIONS, PADDING_MODES
from ..devices import DEVICE_HELP
from ..errors import UsageError
from ..layers.activations import ACTIVATION_NAMES
from ..training.config import DERIVED_FROM_EPOCHS, NORMS, OPTIMIZERS, PRECISIONS, SCHEDULES, TrainConfig
from .common import (
    add_allocator_argument,
    add_output_stride_argument,
    add_small_input_argument,
    apply_allocator,
    output_stride_options,
    refuse_unused_split,
)

_DEFAULTS = TrainConfig()


def _flag(parser: argparse.ArgumentParser, name: str, help_text: str) -> None:
    """A --name / --no-name pair defaulting to the TrainConfig default."""
    field = name.replace("-", "_")
    parser.add_argument(
        f"--{name}", action=argparse.BooleanOptionalAction, default=getattr(_DEFAULTS, field), help=help_text
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train",
        help="train a model (progress, checkpoints, --resume, torchrun)",
        description="Train a model. Under `torchrun --nproc-per-node N -m mobilenets train ...` the same "
        "command runs DistributedDataParallel; --batch-size stays the global batch.",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--model", default=_DEFAULTS.model, help=f"model name (default {_DEFAULTS.model})")
    model.add_argument(
        "--width-mult",
        type=float,
        default=None,
        help="width multiplier α (default 1.0; 0.5 for digits without --pretrained)",
    )
    add_small_input_argument(model)
    add_output_stride_argument(model)
    model.add_argument("--norm", choices=NORMS, default=_DEFAULTS.norm, help="normalization layers")
    model.add_argument(
        "--activation",
        choices=ACTIVATION_NAMES,
        default=None,
        help="replace every stem, block and head activation (default: the model's own; hardswish is "
        "cheaper on CPUs than GELU)",
    )
    model.add_argument(
        "--dropout", type=float, default=None, help="classifier dropout (default: the model's)"
    )
    model.add_argument(
        "--drop-path", type=float, default=_DEFAULTS.drop_path_rate, help="stochastic depth rate"
    )
    model.add_argument(
        "--zero-init-residual",
        action="store_true",
        help="start every residual block as the identity (its last norm's scale at zero); from scratch only",
    )
    model.add_argument(
        "--fix-stem",
        action="store_true",
        help="keep the stem at its table width at every --width-mult (timm's MobileNetV3 below 0.75 do: "
        "needed to fine-tune their weights)",
    )
    model.add_argument(
        "--pretrained",
        metavar="WEIGHTS",
        default=None,
        help="fine-tune from these weights: a file (torchvision, timm, EfficientNet-PyTorch or ours) or a "
        "packaged name such as torchvision_mobilenet_v2; a classifier of another shape starts fresh",
    )

    data = parser.add_argument_group("data")
    data.add_argument(
        "--data", default=_DEFAULTS.data, help="digits (built in), cifar10:PATH, or an image folder PATH"
    )
    data.add_argument(
        "--val-split",
        type=float,
        default=None,
        help=f"held-out fraction of one folder (or digits) (default {_DEFAULTS.val_split}); data with its "
        "own val/ or test/ folder keeps it",
    )
    data.add_argument(
        "--augment", choices=AUGMENTATIONS, default=_DEFAULTS.augment, help="extra augmentation"
    )
    data.add_argument(
        "--cutout",
        type=int,
        default=_DEFAULTS.cutout,
        metavar="PX",
        help="blank a PX×PX square at random inside each training image to the mean (0: off)",
    )
    data.add_argument(
        "--crop-padding",
        type=int,
        default=None,
        metavar="PX",
        help="pad-and-crop shift for images already at --resolution (default: resolution / 8, 4 px at 32)",
    )
    data.add_argument(
        "--padding-mode",
        choices=PADDING_MODES,
        default=_DEFAULTS.padding_mode,
        help="what pad-and-crop pads with: zeros (the standard CIFAR recipe) or a mirror of the image",
    )
    data.add_argument(
        "--alternate-flip",
        action=argparse.BooleanOptionalAction,
        default=_DEFAULTS.alternate_flip,
        help="mirror each training image in every other epoch (a coin toss per image in the first) "
        "instead of a coin toss per image and epoch: airbench's derandomised flip",
    )
    data.add_argument(
        "--resolution",
        "--img-size",
        dest="resolution",
        type=int,
        default=None,
        help="input size in pixels (default: 32 for digits and cifar10, 224 for other folders)",
    )
    data.add_argument("--workers", type=int, default=_DEFAULTS.workers, help="loader processes (folders)")

    recipe = parser.add_argument_group("recipe")
    recipe.add_argument(
        "--epochs", type=int, default=_DEFAULTS.epochs, help=f"total epochs (default {_DEFAULTS.epochs})"
    )
    recipe.add_argument(
        "--batch-size",
        type=int,
        default=_DEFAULTS.batch_size,
        help=f"global batch size (default {_DEFAULTS.batch_size})",
    )
    recipe.add_argument("--optimizer", choices=OPTIMIZERS, default=_DEFAULTS.optimizer)
    recipe.add_argument(
        "--lr", type=float, default=None, help="peak LR (default: per optimizer, batch-scaled; SGD 0.1/256)"
    )
    recipe.add_argument(
        "--momentum",
        type=float,
        default=None,
        help=f"SGD (Nesterov) and RMSProp momentum (default {_DEFAULTS.momentum})",
    )
    recipe.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help="none on norms and biases (default 4e-5; AdamW 0.05, decoupled)",
    )
    recipe.add_argument("--schedule", choices=SCHEDULES, default=_DEFAULTS.schedule)
    recipe.add_argument(
        "--warmup-epochs", type=float, default=None, help="linear warm-up (default: 1, at most epochs / 10)"
    )
    recipe.add_argument(
        "--lr-step-epochs",
        type=int,
        default=None,
        help="epochs between steps of the step schedule (default: a third of --epochs)",
    )
    recipe.add_argument("--lr-gamma", type=float, default=None, help="step: 0.1, exponential: 0.98 (default)")
    recipe.add_argument("--label-smoothing", type=float, default=_DEFAULTS.label_smoothing)
    recipe.add_argument(
        "--progressive-resize",
        type=float,
        default=_DEFAULTS.resize_start,
        metavar="SCALE",
        help="train the first epoch on images scaled by SCALE (e.g. 0.5), growing linearly to full size "
        "(default 1: off); evaluation is always at full size",
    )
    recipe.add_argument(
        "--progressive-resize-until",
        type=float,
        default=None,
        metavar="FRACTION",
        help="fraction of the epochs after which training runs at full size "
        f"(default {_DEFAULTS.resize_until})",
    )
    recipe.add_argument("--ema-decay", type=float, default=_DEFAULTS.ema_decay, help="weight EMA (0: off)")
    recipe.add_argument("--grad-clip", type=float, default=_DEFAULTS.grad_clip, help="max grad norm (0: off)")

    run_group = parser.add_argument_group("run")
    run_group.add_argument("--precision", choices=PRECISIONS, default=_DEFAULTS.precision, help="autocast")
    run_group.add_argument("--device", default=_DEFAULTS.device, help=DEVICE_HELP)
    _flag(run_group, "channels-last", "NHWC memory format (much faster depthwise convs on CPU)")
    _flag(run_group, "compile", "torch.compile the training step")
    _flag(run_group, "sync-bn", "SyncBatchNorm across processes (CUDA only)")
    run_group.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="seeds weights, split, order")
    _flag(run_group, "deterministic", "deterministic kernels only")
    run_group.add_argument(
        "--eval-every",
        type=int,
        default=_DEFAULTS.eval_every,
        metavar="N",
        help="score the validation set after every Nth epoch and the last (default 1: every epoch); "
        "best.safetensors follows the scored epochs only",
    )
    _flag(run_group, "progress", "live progress bar on a terminal")
    run_group.add_argument("--out", default=_DEFAULTS.out, help=f"run directory (default {_DEFAULTS.out})")
    run_group.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out at the step it stopped (a new run if it holds none), with the "
        "run's options where none are given; the model, data, seed, batch size and optimizer must be the "
        "run's, while --epochs, --lr, --weight-decay and the schedule may change",
    )
    add_allocator_argument(run_group)
    parser.set_defaults(run=run)


def _given(args: argparse.Namespace, dest: str) -> object:
    """The value of option ``dest`` if the command line gave it, else None (a default, or a resumed
    run's saved value: neither is the user's choice to refuse)."""
    given = getattr(args, "given", None)  # None: run() called without main(), every value as given
    return getattr(args, dest) if given is None or dest in given else None


def _refuse_unused_recipe_options(args: argparse.Namespace) -> None:
    """Options the chosen optimizer, schedule or resizing would not use: refused, not recorded as if used."""
    unused = {
        "--momentum": ("momentum", args.optimizer == "adamw", "AdamW has none; sgd and rmsprop use it"),
        "--lr-gamma": ("lr_gamma", args.schedule == "cosine", "only the step and exponential schedules"),
        "--lr-step-epochs": ("lr_step_epochs", args.schedule != "step", "only --schedule step"),
        "--progressive-resize-until": (
            "progressive_resize_until",
            args.progressive_resize >= 1.0,
            "only with --progressive-resize SCALE below 1",
        ),
    }
    for flag, (dest, ignored, applies) in unused.items():
        if _given(args, dest) is not None and ignored:
            raise UsageError(f"{flag} would change nothing in this run: {applies}")


# TrainConfig fields set by an option of another name, and those a resume takes from this command only.
_OPTION_OF_FIELD = {
    "drop_path_rate": "drop_path",
    "img_size": "resolution",
    "resize_start": "progressive_resize",
    "resize_until": "progressive_resize_until",
}
_NOT_RESUMED = ("out", "resume", "progress", "device", "pretrained", "model_options", "data")
# The builder options train sets from its own flags: (option, flag's destination, value when not set).
_MODEL_OPTION_FLAGS = (
    ("output_stride", "output_stride", 32),
    ("dilate", "dilate", True),
    ("zero_init_residual", "zero_init_residual", False),
    ("fix_stem", "fix_stem", False),
    ("activation", "activation", None),
)


def _resume_as_saved(args: argparse.Namespace) -> None:
    """On ``--resume``, each option not on the command line takes the run's saved value (config.json),
    so ``train --resume --out DIR`` continues the run as it was set up: another default (the recipe's
    AdamW weight decay, say) or a forgotten flag would change the run silently."""
    from ..models.builder import small_input_strides
    from ..training.run_log import saved_config, trained_on

    out = Path(args.out)
    saved = saved_config(out)
    given: frozenset[str] = getattr(args, "given", frozenset())
    for field, value in saved.items():
        dest = _OPTION_OF_FIELD.get(field, field)
        if field in _NOT_RESUMED or dest in given or not hasattr(args, dest):
            continue
        derive = DERIVED_FROM_EPOCHS.get(field)
        if derive is not None and "epochs" in saved and value == derive(saved["epochs"]):
            continue  # the run's default, which follows this run's --epochs in turn
        if field == "lr_step_epochs" and saved.get("schedule") != "step":
            continue  # resolved but unused: a resume may switch to the step schedule
        setattr(args, dest, small_input_strides(value) if field == "small_input" else value)
    options = saved.get("model_options") or {}
    for option, dest, unset in _MODEL_OPTION_FLAGS:
        if dest not in given:
            setattr(args, dest, options.get(option, unset))
    if "data" in saved and "data" not in given:  # as the checkpoint's card records it: absolute
        args.data = trained_on(out, saved["data"]) or saved["data"]


def run(args: argparse.Namespace) -> int:
    from ..training import train

    apply_allocator(args)
    if args.resume:
        _resume_as_saved(args)
    refuse_unused_split(args.data, {"--val-split": _given(args, "val_split")})
    config = TrainConfig(
        model=args.model,
        width_mult=args.width_mult,
        small_input=args.small_input,
        model_options={
            **output_stride_options(args),
            **({"zero_init_residual": True} if args.zero_init_residual else {}),
            **({"fix_stem": True} if args.fix_stem else {}),
            **({"activation": args.activation} if args.activation else {}),
        },
        norm=args.norm,
        dropout=args.dropout,
        drop_path_rate=args.drop_path,
        pretrained=args.pretrained,
        data=args.data,
        val_split=_DEFAULTS.val_split if args.val_split is None else args.val_split,
        augment=args.augment,
        cutout=args.cutout,
        crop_padding=args.crop_padding,
        padding_mode=args.padding_mode,
        alternate_flip=args.alternate_flip,
        img_size=args.resolution,
        workers=args.workers,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=_DEFAULTS.momentum if args.momentum is None else args.momentum,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        warmup_epochs=args.warmup_epochs,
        lr_step_epochs=args.lr_step_epochs,
        lr_gamma=args.lr_gamma,
        label_smoothing=args.label_smoothing,
        resize_start=args.progressive_resize,
        resize_until=(
            _DEFAULTS.resize_until if args.progressive_resize_until is None else args.progressive_resize_until
        ),
        ema_decay=args.ema_decay,
        grad_clip=args.grad_clip,
        eval_every=args.eval_every,
        precision=args.precision,
        device=args.device,
        channels_last=args.channels_last,
        compile=args.compile,
        sync_bn=args.sync_bn,
        seed=args.seed,
        deterministic=args.deterministic,
        progress=args.progress,
        out=args.out,
        resume=args.resume,
    )
    _refuse_unused_recipe_options(args)  # after TrainConfig: a bad value is named as such first
    result = train(config)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one result line, from the main process
        print(json.dumps(result))
    return 130 if result["interrupted"] else 0
