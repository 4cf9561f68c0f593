"""Arguments several sub-commands share, and the model they describe."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..deploy.patch_inference import PATCH_STRIDE
from ..errors import UsageError
from ..models import MobileNet, create_model
from ..models import check_resolution as check_input_size
from ..models.builder import OUTPUT_STRIDES

if TYPE_CHECKING:
    from ..deploy.memory_efficient import Chunks
    from ..weights.card import ModelCard, TrainedModel


def path_argument(text: str) -> Path:
    """An argparse ``type`` for file and folder options: a path, never an empty string (which
    ``Path("")`` would turn into the current folder, and its messages into nonsense)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; expected a file or folder name")
    return Path(text)


def thread_count(text: str) -> int:
    """An argparse ``type`` for ``--threads``: from 1 to the CPUs this process may run on. More
    threads than CPUs only take turns (ONNX Runtime's spin), so a larger number is taken for a typo."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of threads") from None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if not 1 <= value <= usable:
        raise argparse.ArgumentTypeError(
            f"{value}: this process may run on {usable} CPUs; give 1 to {usable}"
        )
    return value


def check_resolution(value: int, flag: str = "--resolution") -> int:
    """``value`` if it is an input side the models take, else a ``ValueError`` naming ``flag``.

    The rule is the models' (:func:`mobilenets.models.check_resolution`); this only names the flag.
    """
    return check_input_size(value, name=flag)


def add_allocator_argument(parser: argparse._ActionsContainer) -> None:
    """``--system-malloc``: opt out of :func:`apply_allocator`'s setting."""
    parser.add_argument(
        "--system-malloc",
        action="store_true",
        help="keep glibc's default allocator thresholds (freed activation memory goes back to the OS and "
        "is page-faulted in afresh on every pass: slower)",
    )


def apply_allocator(args: argparse.Namespace) -> str:
    """Keep freed memory for reuse (see :mod:`mobilenets.bench.allocator`) unless ``--system-malloc``.

    Commands that run many forward (and backward) passes call this first: on Linux it saves the
    page faults of re-mapping every large activation tensor. Returns a description for reports.
    """
    from ..bench.allocator import reuse_freed_memory

    if args.system_malloc:
        return "system malloc (glibc defaults)"
    return reuse_freed_memory() or "system malloc (no mallopt on this platform)"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model to build: its name (positional, or ``--model`` as other commands spell it) and options."""
    parser.add_argument("model", nargs="?", default=None, help="model name (see `mobilenets list`)")
    parser.add_argument(
        "--model", dest="model_option", default=None, metavar="MODEL", help="the model name, as a flag"
    )
    parser.add_argument("--width-mult", type=float, default=1.0, help="width multiplier α (default 1.0)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default 1000)")
    parser.add_argument(
        "--padding", choices=("symmetric", "tf_same"), default="symmetric", help="conv padding rule"
    )
    add_small_input_argument(parser)
    add_output_stride_argument(parser)


def add_output_stride_argument(parser: argparse._ActionsContainer) -> None:
    """``--output-stride {8,16,32}`` and ``--no-dilate``: ``output_stride`` and ``dilate`` of the builders."""
    parser.add_argument(
        "--output-stride",
        type=int,
        choices=OUTPUT_STRIDES,
        default=32,
        help="the most the network reduces its input (default 32): the later stride-2 blocks run at "
        "stride 1, dilated; counted after --small-input, so --small-input 1 --output-stride 8 ends a "
        "32×32 image at 4×4",
    )
    parser.add_argument(
        "--no-dilate",
        dest="dilate",
        action="store_false",
        help="with --output-stride: drop the later strides without dilating the blocks after them "
        "(CIFAR variants; dilated depthwise convolutions train much slower on CPUs)",
    )


def output_stride_options(args: argparse.Namespace) -> dict[str, int | bool]:
    """The builder options :func:`add_output_stride_argument` sets, only those not at their default."""
    if not args.dilate and args.output_stride == 32:
        raise UsageError(
            "--no-dilate applies to the strides --output-stride drops; give --output-stride 8 or 16"
        )
    options: dict[str, int | bool] = {}
    if args.output_stride != 32:
        options["output_stride"] = args.output_stride
    if not args.dilate:
        options["dilate"] = False
    return options


def _small_input_count(value: str) -> int:
    if value not in ("1", "2"):
        raise argparse.ArgumentTypeError(
            f"expected 1 or 2 (early strides to drop), got {value!r}; "
            "a bare --small-input (2) goes after positional arguments"
        )
    return int(value)


def add_small_input_argument(parser: argparse._ActionsContainer) -> None:
    """``--small-input [1|2]`` (bare: 2) and ``--no-small-input``: ``small_input`` of the model builders."""
    parser.add_argument(
        "--small-input",
        nargs="?",
        const=2,
        default=0,
        type=_small_input_count,
        metavar="N",
        help="for 32×32 images (CIFAR): stride 1 in the stem and first downsampling block (bare or 2, "
        "ends at 4×4) or in the stem only (1, ends at 2×2)",
    )
    parser.add_argument(
        "--no-small-input", dest="small_input", action="store_const", const=0, help="the full strides"
    )


def model_name_from_args(args: argparse.Namespace) -> str:
    """The model named by :func:`add_model_arguments`: positionally or with ``--model``, once."""
    given = [name for name in (args.model, args.model_option) if name is not None]
    if not given:
        raise UsageError("no model given; name one, e.g. `mobilenet_v2` or `--model mobilenet_v2`")
    if len(given) == 2 and given[0] != given[1]:
        raise UsageError(f"two models given ({given[0]!r} and --model {given[1]!r}); name one")
    return given[0]


def model_from_args(args: argparse.Namespace) -> MobileNet:
    return create_model(
        model_name_from_args(args),
        width_mult=args.width_mult,
        num_classes=args.num_classes,
        padding=args.padding,
        small_input=args.small_input,
        **output_stride_options(args),  # type: ignore[arg-type]
    )


def add_weights_arguments(
    parser: argparse.ArgumentParser, *, required: bool = True, group: argparse._ActionsContainer | None = None
) -> None:
    """``--weights`` (alias ``--checkpoint``) and what bare weights from another project need.

    ``group`` (e.g. a mutually exclusive group) receives ``--weights`` instead of ``parser``.
    """
    (group or parser).add_argument(
        "--weights",
        "--checkpoint",
        dest="weights",
        type=path_argument,
        required=required,
        help="weights file: ours (training checkpoint, `mobilenets convert` output) or another project's "
        ".pth/.safetensors (then give --model)",
    )
    (group or parser).add_argument(
        "--pretrained",
        nargs="?",
        const=True,
        default=None,
        metavar="NAME",
        help="packaged ImageNet weights instead of a file: the --model's default, or a registry name "
        "(`mobilenets list --pretrained`)",
    )
    parser.add_argument("--model", default=None, help="architecture, for weights without a model card")
    add_foreign_weight_options(parser)


def add_foreign_weight_options(parser: argparse.ArgumentParser) -> None:
    """What bare weights from another project need: their source, preset and build options."""
    from ..weights.presets import INTERPOLATIONS, PRESETS
    from ..weights.sources import SOURCE_CHOICES

    parser.add_argument(
        "--source",
        choices=SOURCE_CHOICES,
        default="auto",
        help="project the weights come from (default: detect)",
    )
    parser.add_argument(
        "--preset", choices=tuple(PRESETS), default=None, help="preprocessing (default: the source's)"
    )
    parser.add_argument("--width-mult", type=float, default=None, help="width multiplier of the architecture")
    parser.add_argument(
        "--padding",
        choices=("symmetric", "tf_same"),
        default=None,
        help="conv padding (default: the source's)",
    )
    parser.add_argument(
        "--norm-eps",
        type=float,
        default=None,
        help="BatchNorm epsilon (default: the source's; timm's tf_* ports of TensorFlow weights need 1e-3)",
    )
    parser.add_argument(
        "--crop-size", type=int, default=None, help="centre crop in pixels (default: the preset's)"
    )
    parser.add_argument(
        "--resize-size",
        type=int,
        default=None,
        help="shorter side resized to this before the crop (default: the preset's crop fraction)",
    )
    parser.add_argument(
        "--interpolation", choices=INTERPOLATIONS, default=None, help="resize filter (default: the preset's)"
    )
    parser.add_argument(
        "--classes",
        type=path_argument,
        default=None,
        metavar="FILE",
        help="names of the classifier's classes, one per line in label order (default: ImageNet's for a "
        "1000-class head, else 0, 1, ...)",
    )


def foreign_model_kwargs(args: argparse.Namespace) -> dict[str, object]:
    """The build options given by :func:`add_foreign_weight_options` (only those set)."""
    pairs = (("width_mult", args.width_mult), ("padding", args.padding), ("norm_eps", args.norm_eps))
    return {key: value for key, value in pairs if value is not None}


def foreign_sizes(args: argparse.Namespace) -> dict[str, Any]:
    """``--crop-size``, ``--resize-size`` and ``--interpolation`` as :func:`~mobilenets.weights.presets.
    with_sizes` takes them (``None`` where not given), each size checked as an input side."""
    for flag, value in (("--crop-size", args.crop_size), ("--resize-size", args.resize_size)):
        if value is not None:
            check_resolution(value, flag)
    return {"crop_size": args.crop_size, "resize_size": args.resize_size, "interpolation": args.interpolation}


def foreign_classes(args: argparse.Namespace) -> tuple[str, ...] | None:
    """The class names of ``--classes FILE`` (None when not given)."""
    from ..weights.card import read_class_names

    return None if args.classes is None else read_class_names(args.classes)


def load_from_args(args: argparse.Namespace) -> TrainedModel:
    """The model and card named by :func:`add_weights_arguments`' options."""
    from ..weights.card import TrainedModel
    from ..weights.files import check_weights_path
    from ..weights.load import load_pretrained
    from ..weights.registry import default_pretrained, get_pretrained

    if getattr(args, "pretrained", None) is not None:
        given = _given(args, tuple(option for option in _WEIGHT_OPTIONS if option[0] != "model"))
        if given:  # packaged weights carry their own build and preparation: another would mislead or break
            raise UsageError(
                f"{', '.join(given)}: only with --weights FILE (packaged weights carry their own)"
            )
        if args.pretrained is True:
            if args.model is None:
                raise UsageError("--pretrained without a name needs --model (e.g. --model mobilenet_v2)")
            entry = default_pretrained(args.model)
        else:
            entry = get_pretrained(args.pretrained, model=args.model)
        model = create_model(entry.model, pretrained=entry.tag).eval()
        return TrainedModel(model=model, card=model.card)
    if args.weights is None:
        raise UsageError("give --weights FILE or --pretrained [NAME]")
    check_weights_path(args.weights)
    kwargs = {**foreign_model_kwargs(args), **foreign_sizes(args), "classes": foreign_classes(args)}
    return load_pretrained(args.weights, model=args.model, source=args.source, preset=args.preset, **kwargs)


def require_classes(card: ModelCard) -> None:
    """Refuse a feature extractor (no classifier: a headless file) where classes are what is asked (the
    message goes out after the command's name)."""
    if not card.classes:
        raise UsageError(
            f"this {card.model} has no classifier (num_classes 0: a headless file gives "
            "features, not classes); fine-tune it with train --pretrained FILE, or export it as a backbone"
        )


DEPLOYED_FLAGS = {"onnx": "--onnx", "program": "--program", "pte": "--pte", "openvino": "--openvino"}


def add_deployed_arguments(group: argparse._ActionsContainer) -> None:
    """``--onnx``, ``--program``, ``--pte``, ``--openvino``: a file ``mobilenets export`` wrote."""
    group.add_argument(
        "--onnx", type=path_argument, default=None, help="an ONNX file we exported, run in ONNX Runtime"
    )
    group.add_argument(
        "--program",
        type=path_argument,
        default=None,
        help="a TorchScript (.pt) or torch.export (.pt2, fp32 or int8) file we exported, run on the CPU",
    )
    group.add_argument(
        "--pte",
        type=path_argument,
        default=None,
        help="an ExecuTorch program (.pte) we exported, run by ExecuTorch",
    )
    group.add_argument(
        "--openvino",
        type=path_argument,
        default=None,
        help="an OpenVINO IR (.xml) we exported, run by OpenVINO",
    )


def deployed_path(args: argparse.Namespace) -> Path | None:
    """The exported file given by one of :func:`add_deployed_arguments`' flags; a ``UsageError`` when
    its suffix belongs to another flag's runtime (an ``.onnx`` given to ``--pte``)."""
    from ..deploy.deployed import EXECUTORCH_SUFFIX, OPENVINO_SUFFIX

    # Each flag names its runtime; the file's suffix (as `mobilenets export` writes it) must agree, since
    # load_deployed would otherwise pick another runtime by the suffix, unseen.
    expected = {
        "onnx": (".onnx",), "program": (".pt", ".pt2"),
        "pte": (EXECUTORCH_SUFFIX,), "openvino": (OPENVINO_SUFFIX,),
    }  # fmt: skip
    for name, flag in DEPLOYED_FLAGS.items():
        path: Path | None = getattr(args, name, None)
        if path is None:
            continue
        if path.suffix.lower() not in expected[name]:
            raise UsageError(f"{flag} {str(path)!r}: expected a {' or '.join(expected[name])} file")
        ignored = _given(args, _WEIGHT_OPTIONS)
        if ignored:  # an exported file carries its model card: these would change nothing
            raise UsageError(f"{', '.join(ignored)}: only for weights files, not with {flag} (its card says)")
        return path
    return None


# Options that describe weights files (add_weights_arguments), each with its value when not given.
_SIZE_OPTIONS = (("crop_size", None), ("resize_size", None), ("interpolation", None))
_WEIGHT_OPTIONS = (
    ("model", None), ("source", "auto"), ("preset", None), ("width_mult", None), ("padding", None),
    ("norm_eps", None), ("classes", None), *_SIZE_OPTIONS,
)  # fmt: skip


def refuse_overwriting(out: Path, flag: str, *inputs: object) -> None:
    """A ``UsageError`` when the file ``out`` (or an OpenVINO IR's ``.bin`` beside it) is one of the
    files the command reads: writing it would destroy the input (weights, an exported file)."""
    targets = [Path(out), *([Path(out).with_suffix(".bin")] if Path(out).suffix == ".xml" else [])]
    for source in inputs:
        if not isinstance(source, Path) or not source.exists():
            continue
        for target in targets:
            if target.exists() and target.resolve() == source.resolve():
                raise UsageError(f"{flag} {str(out)!r} would overwrite {str(source)!r}, its own input")


def given_flags(args: argparse.Namespace, *dests: str) -> list[str]:
    """The flags among ``dests`` the command line set, whatever their value (``args.given``, which
    :func:`mobilenets.cli.main.main` records; none when the namespace was made otherwise)."""
    return _given(args, tuple((dest, getattr(args, dest, None)) for dest in dests))


def refuse_file_options_with_a_name(args: argparse.Namespace) -> None:
    """``export MODEL`` builds the named model: the options that say what a weights file holds (its
    architecture, its project's layout) would change nothing, so they are refused."""
    stray = _given(args, (("model", None), ("source", "auto")))
    if stray:
        raise UsageError(
            f"{', '.join(stray)}: only with --weights FILE; a MODEL name builds that model (its options: "
            "--width-mult, --padding, --preset and the sizes)"
        )


def _given(args: argparse.Namespace, options: tuple[tuple[str, object], ...]) -> list[str]:
    """The flags of ``options`` (``(dest, value when not given)`` pairs) the command line set: those in
    ``args.given`` (:func:`mobilenets.cli.main.main` records it, so a default given on purpose counts),
    or, for a namespace made otherwise, those whose value is not the unset one."""
    recorded: frozenset[str] | None = getattr(args, "given", None)
    return [
        f"--{dest.replace('_', '-')}"
        for dest, unset in options
        if (dest in recorded if recorded is not None else getattr(args, dest, unset) != unset)
    ]


def add_memory_efficient_arguments(parser: argparse._ActionsContainer, what: str) -> None:
    """``--memory-efficient K``, ``--patches N`` and ``--patch-stride S`` (``deploy.memory_efficient``)."""
    parser.add_argument(
        "--memory-efficient",
        default=None,
        metavar="K",
        help=f"{what} inverted residuals run in K channel chunks (an integer, or 'channel')",
    )
    parser.add_argument(
        "--patches",
        type=int,
        default=None,
        metavar="N",
        help="with --memory-efficient: also run the stem and first blocks on N×N spatial tiles (MCUNetV2)",
    )
    parser.add_argument(
        "--patch-stride",
        type=int,
        default=None,
        metavar="S",
        help=f"the tiles cover the blocks whose output stride is at most S (default {PATCH_STRIDE})",
    )


def memory_efficient_options(args: argparse.Namespace) -> tuple[Chunks, int, int] | None:
    """``--memory-efficient``'s chunks, ``--patches`` and ``--patch-stride`` (defaults filled in);
    None without ``--memory-efficient``."""
    chunks = parse_chunks(args.memory_efficient)
    if chunks is None:
        if args.patches is not None or args.patch_stride is not None:
            raise UsageError("--patches and --patch-stride need --memory-efficient K (use 1 for tiles alone)")
        return None
    patches = 1 if args.patches is None else args.patches  # 0 and negatives reach memory_efficient's check
    if args.patch_stride is not None and patches == 1:  # without tiles it would change nothing
        raise UsageError("--patch-stride sets how far tiles reach; it needs --patches N (N >= 2)")
    return chunks, patches, PATCH_STRIDE if args.patch_stride is None else args.patch_stride


def parse_chunks(value: str | None) -> Chunks | None:
    """``--memory-efficient``'s value: a positive integer or ``"channel"`` (None when not given)."""
    if value is None:
        return None
    if value == "channel":
        return "channel"
    try:
        chunks = int(value)
    except ValueError:
        chunks = 0
    if chunks < 1:
        raise UsageError(f"--memory-efficient must be a positive integer or 'channel', got {value!r}")
    return chunks


def refuse_unused_split(data: str, given: dict[str, object]) -> None:
    """Refuse split options (``{flag: value}``, None when not given) that ``data`` would ignore: its
    validation images are a val/ or test/ folder or a list file, not drawn out of one folder."""
    from ..data.folders import fixed_validation

    flags = [flag for flag, value in given.items() if value is not None]
    if not flags:
        return
    reason = fixed_validation(data)
    if reason is not None:
        named, verb = " and ".join(flags), "choose" if len(flags) > 1 else "chooses"
        raise UsageError(
            f"{named} {verb} which images of one folder of class folders (or of digits) are held out for "
            f"validation; {reason}, so {named} would change nothing"
        )
