"""Depthwise weight gradients on maps smaller than the kernel: oneDNN's against the trainer's tap-by-tap sum.

oneDNN has no depthwise kernel for the weight gradient when the map is smaller than the kernel and falls
back to im2col + GEMM (``ONEDNN_VERBOSE=1`` names it ``x64:gemm:jit``). The trainer swaps such layers'
weight gradient for a sum over kernel taps (:mod:`mobilenets.layers.depthwise`). This times both, each
variant alone in its own process, rounds alternating which goes first:

- each affected layer's weight gradient alone (the layer's real input shape at each of ``--resolutions``:
  32 is CIFAR-10's side, 16 where ``--progressive-resize 0.5`` starts);
- the whole training step of a real :class:`~mobilenets.training.engine.Trainer` (the ``cifar10``
  recipe's network by default: ``mobilenet_v2``, ``small_input=1``, batch 128), with the swap undone
  for the oneDNN variant.

    python benchmarks/depthwise_gradient.py --markdown    # ~3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import torch
from torch import nn

from _report import add_markdown_argument, provenance, table, write_fragments
from mobilenets.bench.allocator import reuse_freed_memory
from mobilenets.layers import DepthwiseConv2d, fast_depthwise_gradients
from mobilenets.layers.depthwise import depthwise_weight_gradient
from train_profile import recipe_trainer, synthetic_batch

VARIANTS = ("oneDNN", "tap sum")


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


def small_map_layers(model: nn.Module, size: int) -> dict[str, torch.Size]:
    """Input shape of each swapped depthwise layer that sees a map smaller than its kernel at ``size``."""
    shapes: dict[str, torch.Size] = {}
    hooks = [
        module.register_forward_hook(
            lambda m, inputs, out, name=name: shapes.__setitem__(name, inputs[0].shape)
        )
        for name, module in model.named_modules()
        if isinstance(module, DepthwiseConv2d)
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    model.train()
    for hook in hooks:
        hook.remove()
    modules = dict(model.named_modules())
    return {
        name: shape
        for name, shape in shapes.items()
        if shape[-2] < modules[name].kernel_size[0] or shape[-1] < modules[name].kernel_size[1]  # type: ignore[index]
    }


def layer_gradient_ms(module: nn.Conv2d, shape: torch.Size, batch: int, variant: str, repeats: int) -> float:
    """Time of one weight gradient of ``module`` on a random ``batch``-image input of ``shape``."""
    input = torch.randn(batch, *shape[1:]).contiguous(memory_format=torch.channels_last)
    weight = module.weight.detach()
    stride, padding, dilation = module.stride, module.padding, module.dilation
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
        trainer = recipe_trainer(args, folder, {}, {})
        modules = dict(trainer.model.named_modules())
        for size in args.resolutions:
            fast_depthwise_gradients(trainer.model)
            layers = small_map_layers(trainer.model, size)
            layer_ms = {
                name: layer_gradient_ms(modules[name], shape, args.batch_size, variant, args.steps)  # type: ignore[arg-type]
                for name, shape in layers.items()
            }
            if variant == "oneDNN":
                fast_depthwise_gradients(trainer.model, enabled=False)
            batch = synthetic_batch(args.batch_size, size)
            step_ms = median_ms(functools.partial(trainer._step, *batch), args.steps)
            results[str(size)] = {
                "step_ms": step_ms,
                "layers": {n: [list(layers[n]), ms] for n, ms in layer_ms.items()},
            }
    return results


def in_own_process(variant: str) -> dict[str, Any]:
    """:func:`measure` in a fresh interpreter."""
    command = [sys.executable, __file__, *sys.argv[1:], "--child", variant]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def size_rows(runs: dict[str, list[dict[str, Any]]], size: str, batch_size: int) -> list[list[str]]:
    """Table rows at one image size: each affected layer, then the training step (medians over runs)."""
    slow_runs, fast_runs = (runs[variant] for variant in VARIANTS)

    def row(label: str, detail: str, slow: list[float], fast: list[float], digits: int) -> list[str]:
        a, b = statistics.median(slow), statistics.median(fast)
        return [size, label, detail, f"{a:.{digits}f}", f"{b:.{digits}f}", f"{a / b:.{digits}f}×"]

    rows = [
        row(
            f"`{name}`",
            "×".join(map(str, shape[1:])),
            [run[size]["layers"][name][1] for run in slow_runs],
            [run[size]["layers"][name][1] for run in fast_runs],
            2,
        )
        for name, (shape, _) in slow_runs[0][size]["layers"].items()
    ]
    step = row(
        "training step",
        f"batch {batch_size}",
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
            runs[variant].append(in_own_process(variant))

    rows, notes = [], []
    for size in map(str, args.resolutions):
        layer_rows = size_rows(runs, size, args.batch_size)
        rows += layer_rows
        ratios = [a[size]["step_ms"] / b[size]["step_ms"] for a, b in zip(*runs.values(), strict=True)]
        per_round = ", ".join(f"{r:.2f}" for r in ratios)
        notes.append(f"{size}×{size}: {len(layer_rows) - 1} layers, step ratio per round {per_round}")
    body = table(["size", "layer", "input (C×H×W)", "oneDNN ms", "tap sum ms", "speed-up"], rows, "rllrrr")
    summary = (
        f"`{args.model}` width {args.width_mult}, `small_input={args.small_input}`, batch {args.batch_size}, "
        f"{args.threads} threads; medians of {args.rounds} processes per variant ({args.steps} timed calls "
        "each). The layers are the depthwise convolutions whose map is smaller than their kernel ("
        + "; ".join(notes)
        + ")."
    )
    text = f"{provenance(time.perf_counter() - started)}\n\n{body}\n\n{summary}"
    print(text)
    write_fragments(args.markdown, {"depthwise-gradient": text})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
