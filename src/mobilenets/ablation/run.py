"""Run a claim: train every arm with the same recipe, budget and seeds, then measure and compare.

Each (arm, seed) is an ordinary training run in ``OUT/ARM/seedK`` (resumable like any other: an
interrupted ablation picks up where it stopped when run again with the same recipe; a saved run of
another recipe is refused, not reported under this one). Costs (parameters, mult-adds) are
exact; latency is measured once per arm at batch 1, the arms interleaved in one process (PyTorch
eager only, no runtime thread pools to disturb each other).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..analysis import summarize
from ..bench.latency import measure_interleaved, prepare_for_inference
from ..data.splits import build_loader, load_splits
from ..deploy.pt2e import quantize_pt2e
from ..errors import TrainingError, UsageError
from ..evaluation.evaluate import evaluate
from ..layers import ExpansionShortcutStage, InvertedResidual, ReLU6
from ..models import MobileNet, create_model
from ..training.config import TrainConfig
from ..training.engine import train
from ..training.run_log import saved_differences
from ..weights.card import load_trained_model
from .claims import Arm, Claim
from .stats import Difference, Summary, difference

CALIBRATION_IMAGES = 256  # training images that set the int8 activation ranges
LATENCY_REPEATS = 30
MAX_SEEDS = 20
# TrainConfig fields that do not change what a run learns; the others must match to reuse a saved run.
_RUN_ONLY_FIELDS = ("out", "resume", "progress", "workers")


@dataclass(frozen=True)
class ArmResult:
    """One arm over all seeds: per-seed metrics, costs and latency."""

    arm: Arm
    top1: tuple[float, ...]
    int8_top1: tuple[float, ...] | None
    params: int
    mult_adds: int
    latency_ms: float
    train_seconds: float  # all seeds' training and evaluation, summed from their logs
    skips: int = 0  # residual shortcuts in the network (where they sit is what inverted-residual moves)

    @property
    def metric_values(self) -> tuple[float, ...]:
        """What the claim compares: top-1, or int8's drop in points when int8 results exist."""
        if self.int8_top1 is None:
            return tuple(100 * value for value in self.top1)
        return tuple(100 * (f - q) for f, q in zip(self.top1, self.int8_top1, strict=True))


@dataclass(frozen=True)
class AblationReport:
    """Everything one ablation measured, and how (recipe, seeds, machine)."""

    claim: Claim
    arms: tuple[ArmResult, ...]
    recipe: dict[str, Any]
    seeds: tuple[int, ...]
    seconds: float
    comparisons: dict[str, Difference] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        metric = "int8 drop (points)" if self.claim.metric == "int8_drop" else "top-1 (%)"
        arms = {}
        for result in self.arms:
            values = Summary(result.metric_values)
            top1 = Summary(tuple(100 * v for v in result.top1))
            arms[result.arm.name] = {
                "options": result.arm.options,
                "metric_values": list(result.metric_values),
                "mean": values.mean,
                "std": values.std,
                "top1_mean": top1.mean,
                "top1_std": top1.std,
                "int8_top1": None if result.int8_top1 is None else [100 * v for v in result.int8_top1],
                "params": result.params,
                "mult_adds": result.mult_adds,
                "latency_ms": result.latency_ms,
                "train_seconds": result.train_seconds,
                "skips": result.skips,
            }
        return {
            "claim": self.claim.name,
            "statement": self.claim.statement,
            "source": self.claim.source,
            "expectation": self.claim.expectation,
            "model": self.recipe["model"],
            "metric": metric,
            "higher_is_better": self.claim.higher_is_better,
            "seeds": list(self.seeds),
            "recipe": self.recipe,
            "arms": arms,
            "differences": {
                name: {
                    "mean": diff.mean,
                    "ci95": None if diff.low is None else [diff.low, diff.high],
                    "verdict": _verdict(name, diff.verdict(higher_is_better=self.claim.higher_is_better)),
                }
                for name, diff in self.comparisons.items()
            },
            "seconds": self.seconds,
        }


def count_skips(model: nn.Module) -> int:
    """Residual shortcuts of ``model``: blocks that add their input, and joins between expansions."""
    stages = [module for module in model.modules() if isinstance(module, ExpansionShortcutStage)]
    inside = {id(block) for stage in stages for block in stage}
    blocks = (m for m in model.modules() if isinstance(m, InvertedResidual) and id(m) not in inside)
    return sum(stage.skips for stage in stages) + sum(block.has_residual for block in blocks)


def _check_arms_differ(claim: Claim, configs: dict[str, list[TrainConfig]]) -> None:
    """Refuse arms that build the same network on this model, or a reference arm without its feature:
    they would be trained and compared as if they tested the claim."""
    built: dict[str, nn.Module] = {}
    for arm in claim.arms:
        first = configs[arm.name][0]
        torch.manual_seed(0)
        built[arm.name] = create_model(first.model, **first.model_kwargs(num_classes=10))
    model = configs[claim.reference.name][0].model
    names = list(built)
    for index, name in enumerate(names):
        for other in names[index + 1 :]:
            fingerprints = [(repr(built[arm]), count_skips(built[arm])) for arm in (name, other)]
            if (
                fingerprints[0] == fingerprints[1]
            ):  # (a module's repr does not show whether it adds its input)
                raise UsageError(
                    f"claim {claim.name!r}: on {model} the arms {name!r} and {other!r} build the same "
                    "network; choose another --model"
                )
    if claim.name == "relu6-int8" and not any(
        isinstance(m, nn.ReLU6 | ReLU6) for m in built[claim.reference.name].modules()
    ):
        raise UsageError(
            f"claim 'relu6-int8': {model} has no ReLU6 to compare with ReLU; choose another --model"
        )


def _check_out(root: Path, claim: Claim, model: str) -> None:
    """Refuse an ``out`` holding another ablation (its report, or runs of other arms): this one's report
    would replace that report, and its arms would sit beside the other's."""
    report = root / "ablation.json"
    if report.is_file():
        try:
            previous = json.loads(report.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            previous = {}
        found = (previous.get("claim"), previous.get("model")) if isinstance(previous, dict) else (None, None)
        if found != (claim.name, model):
            raise UsageError(
                f"{root} holds the report of another ablation ({found[0]} on {found[1]}); give another --out"
            )
    arms = {arm.name for arm in claim.arms}
    others = sorted(
        folder.name
        for folder in (root.iterdir() if root.is_dir() else ())
        if folder.is_dir() and folder.name not in arms and any(folder.glob("seed*/last_state.pt"))
    )
    if others:
        raise UsageError(
            f"{root} holds runs of other arms ({', '.join(others)}), not {claim.name!r}'s; give another --out"
        )


def _saved_run(config: TrainConfig) -> bool:
    """Whether ``config.out`` holds a run to resume (finished or not)."""
    return (Path(config.out) / "last_state.pt").is_file()


def _check_resumable(config: TrainConfig) -> None:
    """Refuse a saved run of another recipe: resuming it would report its results under this one's."""
    if not _saved_run(config):
        return
    keys = tuple(key for key in config.to_dict() if key not in _RUN_ONLY_FIELDS)
    differing = saved_differences(Path(config.out), config, keys)
    if differing:
        raise UsageError(
            f"{config.out} holds a run of another recipe ({', '.join(differing)}); give another --out, "
            "or remove it to train again"
        )


def _final_top1(out: Path, epochs: int) -> float:
    """The last epoch's val top-1 from the run's metrics, as logged (a resumed, finished run too)."""
    lines = [line for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = json.loads(lines[-1]) if lines else {}
    if last.get("epoch") != epochs:
        raise TrainingError(f"{out} stopped before epoch {epochs}; run the ablation again to resume it")
    return float(last["val_top1"])


def _run_seconds(out: Path) -> float:
    """The run's own training and evaluation time, summed from its log (so a resumed run counts whole)."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return sum(float(r.get("seconds", 0.0)) + float(r.get("eval_seconds", 0.0)) for r in records)


def _verdict(comparison: str, outcome: str) -> str:
    """``Difference.verdict`` in the arms' names: "linear better", "no significant difference", ..."""
    first, second = comparison.split(" - ")
    return {"a better": f"{first} better", "b better": f"{second} better"}.get(outcome, outcome)


def _fp32_and_int8_top1(config: TrainConfig, out: Path) -> tuple[float, float]:
    """The final weights of a run on its val split: in fp32, and quantized (PT2E int8, calibrated on
    training images), both on the CPU. Not the logged top-1: under autocast (bf16, a GPU's default) that
    is bf16's, and the drop would mix two precisions' errors."""
    trained = load_trained_model(out / "last.safetensors")
    assert config.img_size is not None  # resolved by TrainConfig
    splits = load_splits(config.data, img_size=config.img_size, val_split=config.val_split, seed=config.seed)
    calibration: list[torch.Tensor] = []
    for images, _ in build_loader(splits.train, batch_size=64, train=False, seed=config.seed, workers=0):
        calibration.append(images)
        if sum(len(batch) for batch in calibration) >= CALIBRATION_IMAGES:
            break
    loader = build_loader(splits.val, batch_size=128, train=False, seed=config.seed, workers=0)
    fp32 = evaluate(trained.model.float().eval(), loader, device="cpu", channels_last=False).top1
    quantized = quantize_pt2e(trained.model, calibration, resolution=config.img_size)
    return fp32, evaluate(quantized, loader, device="cpu", channels_last=False).top1


def run_ablation(
    claim: Claim,
    *,
    data: str,
    epochs: int,
    seeds: int,
    out: str | Path,
    model: str | None = None,
    train_options: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> AblationReport:
    """Train each arm of ``claim`` ``seeds`` times on ``data`` for ``epochs``; measure and compare.

    ``model`` overrides the claim's model; ``train_options`` are further :class:`TrainConfig` fields
    (width_mult, img_size, batch_size, small_input, lr, ...), the same for every arm.
    """
    if type(seeds) is not int or not 1 <= seeds <= MAX_SEEDS:
        raise UsageError(f"seeds must be an integer from 1 to {MAX_SEEDS}, got {seeds!r}")
    options = dict(train_options or {})
    fixed = {"model", "model_options", "data", "epochs", "seed", "out", "progress", "resume"}
    forbidden = sorted(set(options) & fixed)
    if forbidden:
        raise UsageError(f"train_options may not set {forbidden}: the ablation sets them for every arm")
    name = model or claim.model
    root = Path(out)
    _check_out(root, claim, name)
    started = time.perf_counter()
    configs = {
        arm.name: [
            TrainConfig(
                model=name,
                model_options=dict(arm.options),
                data=data,
                epochs=epochs,
                seed=seed,
                out=str(root / arm.name / f"seed{seed}"),
                progress=False,
                **options,
            )
            for seed in range(seeds)
        ]
        for arm in claim.arms
    }  # every config is built, and so checked, before any training starts
    _check_arms_differ(claim, configs)  # and every arm's model: some options depend on the architecture
    for config in (config for arm_configs in configs.values() for config in arm_configs):
        _check_resumable(config)
    results: list[ArmResult] = []
    models: dict[str, MobileNet] = {}
    for arm in claim.arms:
        top1: list[float] = []
        int8: list[float] = []
        train_seconds = 0.0
        for config in configs[arm.name]:
            summary = train(TrainConfig(**{**config.to_dict(), "resume": _saved_run(config)}))
            if summary["interrupted"]:  # Ctrl-C or SIGTERM: the run saved its state; so does the ablation
                raise KeyboardInterrupt
            top1.append(_final_top1(Path(config.out), epochs))
            train_seconds += _run_seconds(Path(config.out))
            if claim.metric == "int8_drop":
                top1[-1], quantized = _fp32_and_int8_top1(config, Path(config.out))
                int8.append(quantized)
            log(
                f"{claim.name} / {arm.name} / seed {config.seed}: top-1 {100 * top1[-1]:.2f}%"
                + (f", int8 {100 * int8[-1]:.2f}%" if int8 else "")
            )
        first = configs[arm.name][0]
        assert first.img_size is not None
        network = load_trained_model(Path(first.out) / "last.safetensors").model
        cost = summarize(network, resolution=first.img_size)
        models[arm.name] = network
        results.append(
            ArmResult(
                arm,
                tuple(top1),
                tuple(int8) if int8 else None,
                cost.total_params,
                cost.total_macs,
                0.0,
                train_seconds,
                count_skips(network),
            )
        )
    resolution = configs[claim.reference.name][0].img_size or 224
    latency = _latency(models, resolution)
    results = [dataclasses.replace(r, latency_ms=latency[r.arm.name]) for r in results]
    reference = results[0]
    comparisons = {
        f"{reference.arm.name} - {other.arm.name}": difference(reference.metric_values, other.metric_values)
        for other in results[1:]
    }
    recipe: dict[str, Any] = {**configs[claim.reference.name][0].to_dict(), "model": name}
    for key in ("model_options", "seed", "out", "resume", "progress"):
        recipe.pop(key, None)
    return AblationReport(
        claim, tuple(results), recipe, tuple(range(seeds)), time.perf_counter() - started, comparisons
    )


def _latency(models: dict[str, MobileNet], resolution: int) -> dict[str, float]:
    x = torch.randn(1, 3, resolution, resolution).to(memory_format=torch.channels_last)

    def call(model: torch.nn.Module) -> Callable[[], object]:
        prepared = prepare_for_inference(model)
        return lambda: prepared(x)

    timed = measure_interleaved(
        {name: call(model) for name, model in models.items()}, repeats=LATENCY_REPEATS
    )
    return {name: result.median_ms for name, result in timed.items()}
