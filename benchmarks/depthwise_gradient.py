"""Depthwise convolutions where oneDNN's training kernels fall back to GEMM, against the trainer's paths.

oneDNN has no depthwise kernel for the weight gradient when the map is smaller than the kernel, or when
the convolution is dilated, and falls back to im2col + GEMM (``ONEDNN_VERBOSE=1`` names it
``x64:gemm:jit``). The trainer's :class:`~mobilenets.layers.DepthwiseConv2d` sums such a weight
gradient kernel tap by kernel tap, or runs a dilated convolution over stacked sub-grids
(:mod:`mobilenets.layers.depthwise`). This times both, each variant alone in its own process, rounds
alternating which goes first:

- each affected layer alone, at its real input shape at each of ``--resolutions`` (32 is CIFAR-10's
  side, 16 where ``--progressive-resize 0.5`` starts): the weight gradient for the tap sum, forward and
  backward for the sub-grids (which change the whole layer);
- the whole training step of a real :class:`~mobilenets.training.engine.Trainer` (the ``cifar10``
  recipe's network by default: ``mobilenet_v2``, ``small_input=1``, batch 128), with the swap undone
  for the oneDNN variant.

    python benchmarks/depthwise_gradient.py --markdown    # ~3 minutes on 2 cores
    python benchmarks/depthwise_gradient.py --small-input 0 --output-stride 8 --resolutions 224 \
        --batch-size 16 --markdown                         # dilated (segmentation backbones)
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from typing import Any

import torch
from torch import nn

from _report import add_markdown_argument, provenance, table, write_fragments
from _shared import in_own_process
from mobilenets.bench.allocator import reuse_freed_memory
from mobilenets.layers import DepthwiseConv2d, fast_depthwise_gradients
from mobilenets.layers.depthwise import depthwise_weight_gradient
from train_profile import recipe_trainer, synthetic_batch

VARIANTS = ("oneDNN", "ours")


def median_ms(run: Any, repeats: int) -> float:
    """Median wall time of ``run()`` in ms, after two untimed calls."""
    for _ in range(2):
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def swapped_layers(model: nn.Module, size: int) -> dict[str, tuple[torch.Size, str]]:
    """Input shape and path of each swapped depthwise layer that leaves PyTorch's path at ``size``."""
    found: dict[str, tuple[torch.Size, str]] = {}

    def record(name: str, module: DepthwiseConv2d, inputs: tuple[torch.Tensor, ...]) -> None:
        with torch.enable_grad():  # the path a training step takes; only the shape is real here
            path = module._training_path(inputs[0].detach().requires_grad_())
        if path is not None:
            found[name] = (inputs[0].shape, path)

    hooks = [
        module.register_forward_pre_hook(functools.partial(record, name))
        for name, module in model.named_modules()
        if isinstance(module, DepthwiseConv2d)
    ]
    model.train()
    with torch.no_grad():
        model(torch.zeros(2, 3, size, size))
    for hook in hooks:
        hook.remove()
    return found


def layer_ms(
    module: nn.Conv2d, shape: torch.Size, path: str, batch: int, variant: str, repeats: int
) -> float:
    """Time of one ``batch``-image weight gradient (``path`` "taps") or forward and backward (otherwise)."""
    input = torch.randn(batch, *shape[1:]).contiguous(memory_format=torch.channels_last)
    weight = module.weight.detach()
    stride, padding, dilation = module.stride, module.padding, module.dilation
    if path != "taps":
        fast_depthwise_gradients(module, enabled=variant != "oneDNN")
        input.requires_grad_()
        upstream = torch.randn_like(module(input))

        def step() -> Any:
            input.grad = module.weight.grad = None
            module(input).backward(upstream)

        return median_ms(step, repeats)
    grad = torch.nn.functional.conv2d(input, weight, None, stride, padding, dilation, module.groups)  # type: ignore[arg-type]
    if variant == "oneDNN":
        mask = [False, True, False]

        def run() -> Any:
            return torch.ops.aten.convolution_backward(
                grad, input, weight, None, stride, padding, dilation, False, [0, 0], module.groups, mask
            )
    else:

        def run() -> Any:
            return depthwise_weight_gradient(grad, input, weight, stride, padding, dilation)  # type: ignore[arg-type]

    return median_ms(run, repeats)


def measure(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    """One variant in this process, per resolution: ms per training step and per affected layer."""
    torch.set_num_threads(args.threads)
    reuse_freed_memory()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        options = {"output_stride": args.output_stride} if args.output_stride != 32 else {}
        trainer = recipe_trainer(args, folder, options, {})
        modules = dict(trainer.model.named_modules())
        for size in args.resolutions:
            fast_depthwise_gradients(trainer.model)
            layers = swapped_layers(trainer.model, size)
            times = {
                name: layer_ms(modules[name], shape, path, args.batch_size, variant, args.steps)  # type: ignore[arg-type]
                for name, (shape, path) in layers.items()
            }
            fast_depthwise_gradients(trainer.model)
            if variant == "oneDNN":
                fast_depthwise_gradients(trainer.model, enabled=False)
            batch = synthetic_batch(args.batch_size, size)
            step_ms = median_ms(functools.partial(trainer._step, *batch), args.steps)
            results[str(size)] = {
                "step_ms": step_ms,
                "layers": {n: [list(layers[n][0]), layers[n][1], ms] for n, ms in times.items()},
            }
    return results


def size_rows(runs: dict[str, list[dict[str, Any]]], size: str, batch_size: int) -> list[list[str]]:
    """Table rows at one image size: each affected layer, then the training step (medians over runs)."""
    slow_runs, fast_runs = (runs[variant] for variant in VARIANTS)

    def row(label: str, detail: str, slow: list[float], fast: list[float], digits: int) -> list[str]:
        a, b = statistics.median(slow), statistics.median(fast)
        return [size, label, detail, f"{a:.{digits}f}", f"{b:.{digits}f}", f"{a / b:.{digits}f}×"]

    timed = {"taps": "weight gradient, tap sum", "subgrids": "forward + backward, sub-grids"}
    rows = [
        row(
            f"`{name}`",
            "×".join(map(str, shape[1:])) + f" ({timed[path]})",
            [run[size]["layers"][name][2] for run in slow_runs],
            [run[size]["layers"][name][2] for run in fast_runs],
            2,
        )
        for name, (shape, path, _) in slow_runs[0][size]["layers"].items()
    ]
    step = row(
        "training step",
        f"batch {batch_size}, forward + backward",
        [run[size]["step_ms"] for run in slow_runs],
        [run[size]["step_ms"] for run in fast_runs],
        2,
    )
    return [*rows, [f"**{cell}**" if i == 1 or i > 2 else cell for i, cell in enumerate(step)]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--width-mult", type=float, default=1.0)
    parser.add_argument("--small-input", type=int, default=1)
    parser.add_argument("--output-stride", type=int, default=32, choices=(8, 16, 32))
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 16], help="image sides to time")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (and layer calls) per process")
    parser.add_argument("--rounds", type=int, default=3, help="processes per variant, alternating order")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    add_markdown_argument(parser, "training.md")
    args = parser.parse_args()
    if min(args.steps, args.rounds, args.threads) < 1:
        parser.error("--steps, --rounds and --threads must be at least 1")
    if args.child:
        print(json.dumps(measure(args, args.child)))
        return 0
    started = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    for round_ in range(args.rounds):
        for variant in VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]:
            runs[variant].append(in_own_process(__file__, variant))

    rows, notes = [], []
    for size in map(str, args.resolutions):
        layer_rows = size_rows(runs, size, args.batch_size)
        rows += layer_rows
        ratios = [a[size]["step_ms"] / b[size]["step_ms"] for a, b in zip(*runs.values(), strict=True)]
        per_round = ", ".join(f"{r:.2f}" for r in ratios)
        notes.append(f"{size}×{size}: {len(layer_rows) - 1} layers, step ratio per round {per_round}")
    header = ["size", "layer", "input (C×H×W), what is timed", "oneDNN ms", "ours ms", "speed-up"]
    body = table(header, rows, "rllrrr")
    summary = (
        f"`{args.model}` width {args.width_mult}, `small_input={args.small_input}`, "
        f"`output_stride={args.output_stride}`, batch {args.batch_size}, {args.threads} threads; medians "
        f"of {args.rounds} processes per variant ({args.steps} timed calls each). The layers are the "
        "depthwise convolutions the trainer does not leave to oneDNN (" + "; ".join(notes) + ")."
    )
    text = f"{provenance(time.perf_counter() - started)}\n\n{body}\n\n{summary}"
    print(text)
    fragment = "depthwise-gradient" if args.output_stride == 32 else "depthwise-dilated"
    write_fragments(args.markdown, {fragment: text})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
