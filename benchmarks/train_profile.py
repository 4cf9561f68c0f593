"""Where a training step's time goes, by kind of operator: the CIFAR-10 networks on this CPU.

A real :class:`~mobilenets.training.engine.Trainer` built with the ``cifar10`` recipe's model options
(``mobilenet_v2`` width 1.0, ``small_input=1``, batch 128 at 32×32, channels_last, in-place ReLU6
keeping its output, ``mobilenets train``'s allocator setting) runs ``_step`` on a synthetic batch in
one process with ``--threads`` threads. After warm-up steps, ``torch.profiler`` records ``--steps``
steps and each aten operator's self CPU time is summed into kinds (convolution, batch norm, activation,
each forward and backward, convolutions split into depthwise and the rest by their weights' shapes;
the optimizer; the rest). This says what a faster step has to speed up:
a kind's share is the most that making it free could save.

Each variant of ``--variants`` is profiled alone in its own process, side by side in one table: the
recipe's network (ends at 2×2); the same with its last stride dropped (``output_stride=8``, ends at
4×4), dilated as segmentation backbones are and undilated as CIFAR variants are (``dilate=False``);
the recipe's step under ``torch.compile`` (``mobilenets train --compile``), whose generated
kernels fuse batch norm with the activation (their time counts as "other"); and the recipe's step
under bf16 autocast (``--precision bf16``), which ``--precision auto`` does not pick on CPUs (only
when named in ``--variants``), and the same with every activation a hard-swish (``--activation
hardswish``); ``cifar_separable_deep`` so, and ``cifar_separable_se`` and
``cifar_separable_dwlast`` in bf16, in place of ``--model``. The first of ``--variants`` is the one the
others are timed against.

    python benchmarks/train_profile.py --markdown     # ~2 minutes on 2 cores

``--fragment train-profile-amx`` writes the table between other markers of the page (default
``train-profile``), so that the bf16 comparison on a CPU with AMX tiles does not replace that one;
``train-profile-separable`` is ``cifar_separable``'s GELU against hard-swish, ``train-profile-deep``
the same network against its deeper twin, ``train-profile-se`` the recipe against its squeeze-excite
twin, ``train-profile-dwlast`` against its twin with the depthwise conv last where it widens::

    python benchmarks/train_profile.py --model cifar_separable --width-mult 1.5 --small-input 0 \
        --batch-size 256 --threads 1 --variants "recipe, bf16 autocast" "recipe, bf16, hardswish" \
        --fragment train-profile-separable --markdown
    python benchmarks/train_profile.py --model cifar_separable --width-mult 1.5 --small-input 0 \
        --batch-size 256 --threads 1 --variants "recipe, bf16, hardswish" \
        "cifar_separable_deep, bf16, hardswish" --fragment train-profile-deep --markdown
    python benchmarks/train_profile.py --model cifar_separable --width-mult 1.5 --small-input 0 \
        --batch-size 256 --threads 1 --variants "recipe, bf16 autocast" "cifar_separable_se, bf16" \
        --fragment train-profile-se --markdown
    python benchmarks/train_profile.py --model cifar_separable --width-mult 1.5 --small-input 0 \
        --batch-size 256 --threads 1 --variants "recipe, bf16 autocast" "cifar_separable_dwlast, bf16" \
        --fragment train-profile-dwlast --markdown
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from _report import add_markdown_argument, provenance, table, write_fragments
from _shared import in_own_process
from mobilenets.bench.allocator import reuse_freed_memory
from mobilenets.training import TrainConfig
from mobilenets.training.distributed import DistContext
from mobilenets.training.engine import Trainer

# Self time of these aten operators (and autograd nodes) makes up each kind; the rest is "other".
# Convolutions are split by their weight's shape, depthwise (one input channel per filter) or not.
CONV_FORWARD = ("aten::mkldnn_convolution", "aten::convolution_overrideable")
CONV_BACKWARD = ("aten::convolution_backward",)
CONV_KINDS = [
    f"{which} convolution, {way}" for which in ("depthwise", "other") for way in ("forward", "backward")
]
KINDS: dict[str, tuple[str, ...]] = {
    "batch norm, forward": ("aten::native_batch_norm", "aten::_native_batch_norm_legit"),
    "batch norm, backward": ("aten::native_batch_norm_backward",),
    # The trainer's ReLU6 (mobilenets.layers.ReLU6) is an autograd function around an in-place clamp;
    # cifar_separable's GELU, or the hard-swish of --activation hardswish.
    "activation, forward": (
        "aten::clamp_",
        "aten::hardtanh_",
        "aten::hardtanh",
        "_ClampKeepingOutput",
        "aten::gelu",
        "aten::hardswish",
        "aten::hardswish_",
    ),
    "activation, backward": (
        "aten::hardtanh_backward",
        "_ClampKeepingOutputBackward",
        "aten::gelu_backward",
        "aten::hardswish_backward",
    ),
    "max pooling": ("aten::max_pool2d_with_indices", "aten::max_pool2d_with_indices_backward"),
    "optimizer": ("aten::_fused_sgd_", "Optimizer.step#SGD.step", "Optimizer.zero_grad#SGD.zero_grad"),
}
# The variants compared: builder options on top of the recipe's (mobilenet_v2, small_input=1), and
# TrainConfig settings.
RECIPE = "recipe (2×2)"
BF16 = "recipe, bf16 autocast"
DEEP = "cifar_separable_deep, bf16, hardswish"
SE = "cifar_separable_se, bf16"
DWLAST = "cifar_separable_dwlast, bf16"
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    RECIPE: ({}, {}),
    "output_stride 8, dilated (4×4)": ({"output_stride": 8}, {}),
    "output_stride 8, undilated (4×4)": ({"output_stride": 8, "dilate": False}, {}),
    "recipe, torch.compile": ({}, {"compile": True}),
    BF16: ({}, {"precision": "bf16"}),
    "recipe, bf16, hardswish": ({"activation": "hardswish"}, {"precision": "bf16"}),
    # cifar_separable's deeper twin, in place of --model (a third block where maps are 7×7 and 3×3)
    DEEP: ({"activation": "hardswish"}, {"precision": "bf16", "model": "cifar_separable_deep"}),
    # and its squeeze-excite twin (a gate on each block's output where maps are 7×7 and 3×3), GELU
    SE: ({}, {"precision": "bf16", "model": "cifar_separable_se"}),
    # and its twin whose widening blocks run the pointwise conv first, the depthwise on the wide map
    DWLAST: ({}, {"precision": "bf16", "model": "cifar_separable_dwlast"}),
}


def recipe_trainer(
    args: argparse.Namespace, folder: str, options: dict[str, Any], settings: dict[str, Any]
) -> Trainer:
    """A :class:`Trainer` as ``mobilenets train`` builds it for ``args``' network, in one CPU process."""
    config = TrainConfig(
        **{
            "model": args.model,
            "width_mult": args.width_mult,
            "small_input": args.small_input,
            "model_options": options,
            "data": "digits",  # only builds the Trainer (10 classes, 32 px); the batch is synthetic
            "img_size": 32,
            "batch_size": args.batch_size,
            "workers": 0,
            "progress": False,
            "out": folder,
            **settings,  # may name another model
        }
    )
    trainer = Trainer(config, DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")))
    trainer.train_module.train()
    return trainer


def synthetic_batch(batch_size: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random images (channels_last, as the trainer's loader gives them) and labels."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, size, size, generator=generator)
    labels = torch.randint(0, 10, (batch_size,), generator=generator)
    return images.contiguous(memory_format=torch.channels_last), labels


def profile_variant(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    """Profile one variant's training step in this process: ms per step by kind, unprofiled step."""
    options, settings = VARIANTS[variant]
    torch.set_num_threads(args.threads)
    reuse_freed_memory()
    with tempfile.TemporaryDirectory() as folder:
        trainer = recipe_trainer(args, folder, options, settings)
        images, labels = synthetic_batch(args.batch_size, 32)
        for _ in range(3):
            trainer._step(images, labels)
        timed = time.perf_counter()
        for _ in range(args.steps):
            trainer._step(images, labels)
        step_ms = 1000 * (time.perf_counter() - timed) / args.steps
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
            for _ in range(args.steps):
                trainer._step(images, labels)
    kinds = dict.fromkeys([*CONV_KINDS, *KINDS, "other"], 0.0)
    for event in profiler.key_averages(group_by_input_shape=True):
        kinds[kind_of(event.key, event.input_shapes)] += event.self_cpu_time_total / 1000 / args.steps
    return {"step_ms": step_ms, "profiled_ms": sum(kinds.values()), "kinds": kinds}


def kind_of(op: str, shapes: list[list[int]]) -> str:
    """The kind an aten operator's self time counts to; a convolution's by its input and weight
    (forward: arguments 0 and 1, backward: 1 and 2), depthwise when each filter sees one of several
    input channels: weight ``(C, 1, k, k)`` on a ``(N, C > 1, H, W)`` input."""
    if op in CONV_FORWARD or op in CONV_BACKWARD:
        first = 0 if op in CONV_FORWARD else 1
        images, weight = (shapes[first], shapes[first + 1]) if len(shapes) > first + 1 else ([], [])
        depthwise = len(weight) == 4 and weight[1] == 1 and len(images) == 4 and images[1] > 1
        which = "depthwise" if depthwise else "other"
        return f"{which} convolution, {'forward' if op in CONV_FORWARD else 'backward'}"
    return next((kind for kind, names in KINDS.items() if op in names), "other")


def share(result: dict[str, Any], kind: str) -> str:
    """A table cell: ms per step of ``kind`` and its share of the variant's profiled total."""
    ms = result["kinds"][kind]
    return f"{ms:.1f} ({ms / result['profiled_ms']:.0%})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--width-mult", type=float, default=1.0)
    parser.add_argument("--small-input", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="profiled steps, after 3 warm-up steps")
    parser.add_argument(  # bf16 only when asked: emulated (10× slower) on CPUs without bf16 instructions
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=[RECIPE, *(v for v in VARIANTS if v != RECIPE and "bf16" not in v)],
        help="the first is the one the others are compared with",
    )
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    add_markdown_argument(parser, "training.md")
    parser.add_argument(
        "--fragment",
        # the default table; bf16 on a CPU with AMX tiles; cifar_separable's activations, depth, gates
        # and depthwise order
        choices=(
            "train-profile",
            "train-profile-amx",
            "train-profile-separable",
            "train-profile-deep",
            "train-profile-se",
            "train-profile-dwlast",
        ),
        default="train-profile",
        help="the page's markers to write between",
    )
    args = parser.parse_args()
    if args.steps < 1 or args.threads < 1:
        parser.error("--steps and --threads must be at least 1")
    if args.child:
        print(json.dumps(profile_variant(args, args.child)))
        return 0
    started = time.perf_counter()
    results = {variant: in_own_process(__file__, variant) for variant in args.variants}
    cells = [[kind, *(share(r, kind) for r in results.values())] for kind in [*CONV_KINDS, *KINDS, "other"]]
    cells.append(["**step, unprofiled**", *(f"**{r['step_ms']:.0f}**" for r in results.values())])
    cells.append(["images/s", *(f"{1000 * args.batch_size / r['step_ms']:.0f}" for r in results.values())])
    baseline = args.variants[0]
    base = results[baseline]
    summary = (
        f"`{args.model}` width {args.width_mult}, `small_input={args.small_input}`, batch "
        f"{args.batch_size} at 32×32, {args.threads} threads, each variant in its own process; ms of "
        "profiled self time per step (share of the variant's profiled total)."
    )
    kinds = base["kinds"].items()
    memory_bound = sum(ms for kind, ms in kinds if kind.startswith(("batch norm", "activation", "max pool")))
    summary += (
        f" In the step of “{baseline}”, batch norm, activations and pooling, passes over the activation "
        f"tensors that compute almost nothing, take {memory_bound / base['profiled_ms']:.0%}."
    )
    for variant, r in results.items():
        if variant != baseline:
            summary += f" {variant}: {r['step_ms'] / base['step_ms']:.2f}× the step of “{baseline}”."
    body = table(["kind", *results], cells, "l" + "r" * len(results))
    text = f"{provenance(time.perf_counter() - started)}\n\n{body}\n\n{summary}"
    print(text)
    write_fragments(args.markdown, {args.fragment: text})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
