"""Training throughput (images/s) of our training step against torchvision's mobilenet_v2 in a plain loop.

"Ours" is the real code path: a :class:`~mobilenets.training.engine.Trainer` built from a default
``TrainConfig`` (our mobilenet_v2, channels_last, the engine's optimizer and scheduler, autocast from
``precision='auto'``) whose ``_step`` is timed on a fixed synthetic batch. "torchvision" is
``torchvision.models.mobilenet_v2(num_classes=10)`` in NCHW fp32 with SGD(momentum 0.9) and
CrossEntropyLoss: zero_grad, forward, loss, backward, step. All variants of one input setting run in
the same process with the same threads, one step each per round, interleaved (A, B, C, A, B, C, ...),
after one untimed warm-up step; we report the median images/s and ratios of medians. "Kept for
backward" is what autograd saves during one forward (distinct storages): a step's activation memory.
The rows ending in ", bf16" time bf16 autocast against the fp32 that ``precision='auto'`` picks on
CPUs (", fp32" if ``auto`` ever picks bf16 on the CPU again).

Two settings: ``--resolution`` (default 96) with the standard networks, and a CIFAR-style 32×32 one,
where our ``small_input=True`` network keeps two more stride-2 positions at full resolution and so
costs far more than torchvision's (which has no such option): that row is compared against our own
NCHW run and against our standard network at 32×32, never against torchvision's different network.

``--compile`` adds our step under ``torch.compile`` (``TrainConfig(compile=True)``); its compile
warm-up (minutes on 2 cores when torchinductor's on-disk cache is cold, seconds when warm) is timed
separately and excluded; a failure is reported, not raised. Off by default to keep the run short.

All of the above share one process, so they share its allocator setting: glibc's defaults unless the
environment says otherwise, or ``--reuse`` applies ``mobilenets train``'s. ``mobilenets train``
keeps freed memory for reuse (:func:`mobilenets.bench.allocator.reuse_freed_memory`, opt out with
``--system-malloc``), which a plain script does not get: every large activation and gradient tensor
is page-faulted in afresh on every step. The allocator rows measure that at the process level: each
row runs in fresh processes (``--child``), rows take turns, and the median is over all their steps:
torchvision's plain loop as a user's script runs it (glibc defaults), ours as ``mobilenets train``
runs it, and torchvision's loop with the same setting as ours (like with like). ``--no-allocator``
skips them.

Usage: python benchmarks/train_throughput.py [--resolution 96] [--batch-size 64] [--rounds 8] [--reuse]
[--threads 2] [--compile] [--no-cifar] [--no-allocator] [--json PATH] [--markdown [PAGE]]

``--markdown`` also writes the table and its findings into ``docs/training.md`` (between the
``train-throughput`` markers).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch import nn

from _report import add_markdown_argument, provenance, write_fragments
from mobilenets.analysis import saved_for_backward_bytes
from mobilenets.analysis.layers import layer_costs
from mobilenets.bench.machine import cpu_description
from mobilenets.layers import ReLU6
from mobilenets.training.config import TrainConfig
from mobilenets.training.distributed import DistContext
from mobilenets.training.engine import Trainer
from mobilenets.training.runtime import resolve_precision

NUM_CLASSES = 10  # the digits data the Trainer is built on has 10 classes
CIFAR_RESOLUTION = 32
TV_LR = 0.05  # the engine's default SGD LR at batch 64 (0.1 × 64 / 128); speed does not depend on it
Step = Callable[[], object]


@dataclass
class Variant:
    """One timed training step: what it runs, its forward cost, and the variant its ratio is against."""

    name: str
    step: Step | None
    macs_per_image: int
    baseline: str | None = None
    setup_seconds: float = 0.0
    error: str | None = None
    images_per_s: list[float] = field(default_factory=list)
    kept_bytes: int | None = None  # what autograd keeps for the backward of one step's forward

    @property
    def median(self) -> float:
        return statistics.median(self.images_per_s) if self.images_per_s else float("nan")

    @property
    def iqr(self) -> float:
        if len(self.images_per_s) < 4:
            return float("nan")
        q = statistics.quantiles(self.images_per_s, n=4)
        return q[2] - q[0]


def _batch(batch_size: int, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, resolution, resolution, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (batch_size,), generator=generator)
    return images, labels


def _forward_macs(model: nn.Module, resolution: int, channels_last: bool) -> int:
    """Forward mult-adds per image (exact count), so rows of different networks can be read fairly."""
    example = torch.zeros(1, 3, resolution, resolution)
    if channels_last:
        example = example.contiguous(memory_format=torch.channels_last)
    was_training = model.training
    costs = layer_costs(model.eval(), example)
    model.train(was_training)
    return sum(layer.macs for layer in costs)


def torchvision_variant(name: str, batch_size: int, resolution: int) -> Variant:
    """torchvision's mobilenet_v2 in the plain NCHW fp32 loop."""
    model = torchvision.models.mobilenet_v2(num_classes=NUM_CLASSES)
    macs = _forward_macs(model, resolution, channels_last=False)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=TV_LR, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    images, labels = _batch(batch_size, resolution)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()

    return Variant(name, step, macs, kept_bytes=saved_for_backward_bytes(model, images))


def ours_variant(
    name: str,
    batch_size: int,
    resolution: int,
    workdir: Path,
    *,
    channels_last: bool = True,
    small_input: bool = False,
    compile_model: bool = False,
    relu6_out_of_place: bool = False,
    precision: str = "auto",
    baseline: str | None = None,
) -> Variant:
    """A real Trainer (engine defaults otherwise) whose ``_step`` runs on a fixed synthetic batch.

    ``relu6_out_of_place`` runs the model's ReLU6 out of place (what the engine did before
    :class:`~mobilenets.layers.ReLU6` clamped in place keeping its output), to measure that choice;
    ``precision`` likewise measures what ``precision='auto'`` chose against the alternative.
    """
    config = TrainConfig(
        model="mobilenet_v2",
        small_input=small_input,
        data="digits",
        img_size=resolution,
        batch_size=batch_size,
        channels_last=channels_last,
        compile=compile_model,
        precision=precision,
        workers=0,
        progress=False,
        out=str(workdir / name.replace(" ", "_").replace(",", "")),
    )
    context = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    trainer = Trainer(config, context)
    if relu6_out_of_place:
        for module in trainer.model.modules():
            if isinstance(module, ReLU6):
                module.inplace = False
    macs = _forward_macs(trainer.model, resolution, channels_last)
    trainer.train_module.train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images, labels = _batch(batch_size, resolution)
    images = images.contiguous(memory_format=memory_format)

    def step() -> None:
        trainer._step(images, labels)

    variant = Variant(name, step, macs, baseline=baseline)
    if not compile_model:
        variant.kept_bytes = saved_for_backward_bytes(trainer.train_module, images)
    else:
        started = time.perf_counter()
        try:
            step()  # compiles forward and backward graphs
            step()
        except Exception as error:  # compile failures come in many types; report, do not crash
            variant.step = None
            variant.error = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
            torch._dynamo.reset()
        variant.setup_seconds = time.perf_counter() - started
    return variant


def run_interleaved(variants: list[Variant], batch_size: int, rounds: int, warmup: int = 1) -> None:
    """Warm-up steps, then ``rounds`` rounds of one step per variant, filling ``images_per_s``."""
    runnable = [variant for variant in variants if variant.step is not None]
    for _ in range(warmup):
        for variant in runnable:
            assert variant.step is not None
            variant.step()
    for _ in range(rounds):
        for variant in runnable:
            assert variant.step is not None
            started = time.perf_counter()
            variant.step()
            variant.images_per_s.append(batch_size / (time.perf_counter() - started))


# Process-level allocator rows: (name, variant, reuse freed memory?, baseline)
ALLOCATOR_ROWS = (
    ("torchvision NCHW, glibc defaults", "torchvision", False, None),
    ("ours channels_last, as `mobilenets train` runs", "ours", True, "torchvision NCHW, glibc defaults"),
    ("torchvision NCHW, freed memory reused", "torchvision", True, "torchvision NCHW, glibc defaults"),
)
CHILD_STEPS = 4  # timed steps per child process, after one warm-up step


def child_main(variant: str, reuse: bool, batch_size: int, resolution: int, threads: int) -> None:
    """One allocator row's process: set the allocator, build the variant, print its images/s as JSON."""
    if reuse:
        from mobilenets.bench.allocator import reuse_freed_memory

        if reuse_freed_memory() is None:
            raise SystemExit("this platform has no glibc mallopt; the allocator rows need Linux/glibc")
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        if variant == "torchvision":
            timed = torchvision_variant(variant, batch_size, resolution)
        else:
            timed = ours_variant(variant, batch_size, resolution, Path(tmp))
        run_interleaved([timed], batch_size, CHILD_STEPS)
    print(json.dumps(timed.images_per_s))


def allocator_variants(
    batch_size: int, resolution: int, threads: int, rounds: int, macs: dict[str, int]
) -> list[Variant]:
    """The allocator rows, each run in ``rounds`` fresh processes taking turns with the others.

    ``macs`` maps ``"torchvision"`` and ``"ours"`` to their forward mult-adds per image.
    """
    variants = [
        Variant(name, None, macs[kind], baseline=baseline) for name, kind, _, baseline in ALLOCATOR_ROWS
    ]
    for _ in range(rounds):
        for variant, (_, kind, reuse, _) in zip(variants, ALLOCATOR_ROWS, strict=True):
            command = [sys.executable, __file__, "--child", kind, "--batch-size", str(batch_size)]
            command += ["--resolution", str(resolution), "--threads", str(threads)]
            command += ["--child-reuse"] if reuse else []
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            variant.images_per_s += json.loads(done.stdout.strip().splitlines()[-1])
    return variants


def _number(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1f}"


def _ratio(variant: Variant, by_name: dict[str, Variant]) -> tuple[str, str]:
    if variant.baseline is None or variant.error is not None:
        return "", ""
    return f"{variant.median / by_name[variant.baseline].median:.2f}×", variant.baseline


def _variant_record(variant: Variant, variants: list[Variant]) -> dict[str, object]:
    """JSON-ready results of one variant (``None`` where it did not run)."""
    by_name = {other.name: other for other in variants}
    ran = variant.error is None and bool(variant.images_per_s)
    ratio = None
    if ran and variant.baseline is not None:
        ratio = variant.median / by_name[variant.baseline].median
    return {
        "name": variant.name,
        "macs_per_image": variant.macs_per_image,
        "median_images_per_s": variant.median if ran else None,
        "images_per_s": variant.images_per_s,
        "baseline": variant.baseline,
        "ratio": ratio,
        "compile_seconds": variant.setup_seconds or None,
        "kept_for_backward_bytes": variant.kept_bytes,
        "error": variant.error,
    }


def markdown_table(settings: dict[str, list[Variant]]) -> str:
    """One row per variant: forward cost, memory kept for the backward, median and IQR of images/s,
    ratio against its baseline."""
    lines = [
        "| input | variant | fwd mult-adds/img | kept for backward | images/s (median) | IQR | ratio "
        "| against |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for setting, variants in settings.items():
        by_name = {variant.name: variant for variant in variants}
        for variant in variants:
            kept = "" if variant.kept_bytes is None else f"{variant.kept_bytes / 1e6:.0f} MB"
            if variant.error is not None:
                lines.append(
                    f"| {setting} | {variant.name} | {variant.macs_per_image / 1e6:.1f}M | {kept} | "
                    f"failed: {variant.error[:200]} | | | |"
                )
                continue
            ratio, against = _ratio(variant, by_name)
            lines.append(
                f"| {setting} | {variant.name} | {variant.macs_per_image / 1e6:.1f}M | {kept} | "
                f"{variant.median:.1f} | {_number(variant.iqr)} | {ratio} | {against} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resolution", type=int, default=96, help="input side of the main setting")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=8, help="timed steps per variant (median reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time our step under torch.compile")
    parser.add_argument("--no-cifar", action="store_true", help="skip the 32×32 small-input setting")
    parser.add_argument("--no-allocator", action="store_true", help="skip the process-level allocator rows")
    parser.add_argument(
        "--reuse", action="store_true", help="in-process rows keep freed memory, as `mobilenets train` does"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write results here")
    add_markdown_argument(parser, "training.md")
    parser.add_argument("--child", choices=("torchvision", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--child-reuse", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.child_reuse, args.batch_size, args.resolution, args.threads)
        return
    if args.rounds < 1 or args.threads < 1 or args.batch_size < 2 or args.resolution < 32:
        parser.error("need --rounds >= 1, --threads >= 1, --batch-size >= 2 and --resolution >= 32")

    if args.reuse:
        from mobilenets.bench.allocator import reuse_freed_memory

        reuse_freed_memory()
    torch.set_num_threads(args.threads)
    batch, res = args.batch_size, args.resolution
    precision = resolve_precision("auto", torch.device("cpu"))
    started = time.perf_counter()
    settings: dict[str, list[Variant]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        tv = "torchvision NCHW"
        # What precision="auto" did not choose, against what it chose (the rows named "ours channels_last").
        other = "bf16" if precision is None else "fp32"
        main_variants = [
            torchvision_variant(tv, batch, res),
            ours_variant("ours channels_last", batch, res, workdir, baseline=tv),
            ours_variant("ours NCHW", batch, res, workdir, channels_last=False, baseline=tv),
            ours_variant(
                "ours channels_last, ReLU6 out of place",
                batch,
                res,
                workdir,
                relu6_out_of_place=True,
                baseline="ours channels_last",
            ),
            ours_variant(
                f"ours channels_last, {other}",
                batch,
                res,
                workdir,
                precision=other,
                baseline="ours channels_last",
            ),
        ]
        if args.compile:
            print("compiling our step (torch.compile warm-up, not timed) ...", flush=True)
            main_variants.append(
                ours_variant(
                    "ours channels_last + compile", batch, res, workdir, compile_model=True, baseline=tv
                )
            )
        settings[f"{res}×{res}"] = main_variants
        if not args.no_cifar:
            r = CIFAR_RESOLUTION
            settings[f"{r}×{r}"] = [
                torchvision_variant(tv, batch, r),
                ours_variant("ours channels_last", batch, r, workdir, baseline=tv),
                ours_variant(
                    "ours small_input channels_last",
                    batch,
                    r,
                    workdir,
                    small_input=True,
                    baseline="ours small_input NCHW",
                ),
                ours_variant(
                    "ours small_input NCHW", batch, r, workdir, small_input=True, channels_last=False
                ),
                ours_variant(
                    f"ours small_input channels_last, {other}",
                    batch,
                    r,
                    workdir,
                    small_input=True,
                    precision=other,
                    baseline="ours small_input channels_last",
                ),
            ]
        for setting, variants in settings.items():
            print(f"timing {setting}: {', '.join(v.name for v in variants if v.step)} ...", flush=True)
            run_interleaved(variants, batch, args.rounds)
    if not args.no_allocator:
        child_rounds = max(1, math.ceil(args.rounds / CHILD_STEPS))
        print(f"timing the allocator rows ({child_rounds} fresh processes each, in turns) ...", flush=True)
        macs = {"torchvision": main_variants[0].macs_per_image, "ours": main_variants[1].macs_per_image}
        rows = allocator_variants(batch, res, args.threads, child_rounds, macs)
        settings[f"{res}×{res}, per process"] = rows
    total = time.perf_counter() - started

    autocast = "fp32 (no autocast)" if precision is None else f"autocast {precision}"
    from mobilenets.bench.allocator import current_setting

    header = (
        f"Batch {batch}, {args.threads} threads; ours: Trainer._step with engine defaults ({autocast} from "
        f"precision=auto, SGD nesterov), torchvision: plain NCHW fp32 SGD-momentum loop; median of "
        f"{args.rounds} interleaved steps after 1 warm-up. In-process rows: {current_setting()}; "
        "per-process rows: as named."
    )
    findings: list[str] = []
    for variants in settings.values():
        for variant in variants:
            if variant.setup_seconds:
                findings.append(
                    f"- {variant.name}: compile warm-up {variant.setup_seconds:.0f} s "
                    "(first two steps, untimed; seconds when torchinductor's on-disk cache is warm, "
                    "minutes when cold)"
                )
    if not args.no_cifar:
        findings.append(
            f"- {CIFAR_RESOLUTION}×{CIFAR_RESOLUTION}: small_input keeps full resolution through two more "
            "stride-2 positions, so it is a different, costlier network than torchvision's at 32×32 "
            "(compare the mult-adds); its ratio is against our own NCHW run only."
        )
    main_by_name = {variant.name: variant for variant in settings[f"{res}×{res}"]}
    same_process = main_by_name["ours channels_last"].median / main_by_name[tv].median
    findings.append(f"- ours vs torchvision's plain loop, same process and allocator: {same_process:.2f}×.")
    if not args.no_allocator:
        rows = settings[f"{res}×{res}, per process"]
        goal = rows[1].median / rows[0].median
        findings.append(
            f"- issue goal: `mobilenets train`'s step ≥ 2× torchvision's plain loop as a script runs it "
            f"at {res}×{res}, batch {batch}: measured {goal:.2f}× ({'met' if goal >= 2 else 'not met'}); "
            f"against torchvision with the same allocator setting {rows[1].median / rows[2].median:.2f}×."
        )
    text = f"{header}\n\n{markdown_table(settings)}\n\n" + "\n".join(findings)
    print(f"\nTraining throughput, {cpu_description()}, torch {torch.__version__} ({total:.0f} s total).")
    print(text)
    write_fragments(args.markdown, {"train-throughput": provenance(total) + "\n\n" + text})

    if args.json is not None:
        report = {
            "batch_size": batch,
            "threads": args.threads,
            "rounds": args.rounds,
            "torch": torch.__version__,
            "cpu": cpu_description(),
            "autocast": None if precision is None else str(precision),
            "total_seconds": total,
            "settings": {
                setting: [_variant_record(variant, variants) for variant in variants]
                for setting, variants in settings.items()
            },
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"- results written to {args.json}")


if __name__ == "__main__":
    main()
