"""Paired comparisons: two variants loaded side by side in two fresh processes, taking turns.

Rounds of fresh processes (:mod:`.inference`) time two variants seconds or minutes apart, and the speed
of a shared VM drifts on that scale: over ten rounds, the ratio of our OpenVINO int8 file's time to
ONNX Runtime's ranged 0.70-1.18×, wider than the margins issue 21's goals ask about. Here each variant
is loaded once in its own fresh process (as in the rounds: its own thread pools, heap and caches) and
the two alternate, ``repeats`` timed calls a turn, in the order A B, B A, A B, ..., with a short
pause before each turn so a runtime's spinning worker threads are quiet before the other runs. Only
one computes at a time. Each turn's ratio (A's median over the adjacent turn's median of B's) then
compares the two within a fraction of a second of each other.

Reported: the median of the turns' ratios and a distribution-free confidence interval for it (order
statistics, from the binomial distribution: no assumption on the shape of the noise), taken over the
medians of ``BLOCKS`` runs of consecutive turns. Neighbouring turns are not independent draws: a slow
spell of the machine lasts many turns and slows one side more than the other, so an interval over
single turns comes out too narrow. On 2026-12-07, 100 turns taken in such a spell (lag-1
autocorrelation of the ratios 0.75) gave 0.679-0.716× over single turns and 0.671-0.880× over 10
blocks; in a quiet run (autocorrelation ~0) the two agree. A goal "A at most ``g``× B" is shown met
when the whole interval lies at or below ``g``, shown missed when it lies wholly above, and not shown
otherwise.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from .child import ChildSpec
from .fresh import TimingProcesses
from .prepare import prepare
from .variants import check_variants
from .workfiles import WorkFiles, calibration_tag

TURNS = 60
REPEATS = 20
WARMUP = 20
PAUSE_S = 0.05  # before each turn: ONNX Runtime's and OpenVINO's workers stop spinning well within it
CONFIDENCE = 0.95
BLOCKS = 10  # runs of consecutive turns whose medians the interval is taken over


def min_values(confidence: float = CONFIDENCE) -> int:
    """The fewest values whose range (min to max) brackets the median with ``confidence``: 6 at 95%.

    The range of ``n`` draws misses the median only when all fall on one side: ``2 × 0.5**n``.
    """
    return max(1, math.ceil(math.log2(2 / (1 - confidence))))


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """A distribution-free ``confidence`` interval for the median of the population ``values`` came from.

    Order statistics (SciPy's ``quantile_test``): the ``k``-th smallest and ``k``-th largest of ``n``
    values bracket the median with a probability given by the binomial distribution. With too few
    values for the confidence (fewer than 6 at 95%) it is the whole range, min to max.
    """
    from scipy import stats

    if not values:
        raise UsageError("median_interval needs at least one value")
    if not 0 < confidence < 1:
        raise UsageError(f"confidence must be between 0 and 1, got {confidence}")
    test = stats.quantile_test(list(values), q=statistics.median(values), p=0.5)
    low, high = test.confidence_interval(confidence_level=confidence)
    if math.isnan(low) or math.isnan(high):
        return min(values), max(values)
    return float(low), float(high)


def block_medians(values: Sequence[float], blocks: int = BLOCKS) -> list[float]:
    """The medians of ``blocks`` runs of consecutive ``values``, as equal in length as whole numbers
    allow (each value its own run when there are fewer values than ``blocks``)."""
    count = min(blocks, len(values))
    edges = [round(index * len(values) / count) for index in range(count + 1)]
    return [statistics.median(values[start:end]) for start, end in itertools.pairwise(edges)]


@dataclass(frozen=True)
class PairedResult:
    """The turns of ``first`` and ``second``, in order; turn ``t`` of each ran next to the other's."""

    first: str
    second: str
    first_turns_ms: tuple[tuple[float, ...], ...]
    second_turns_ms: tuple[tuple[float, ...], ...]

    @property
    def ratios(self) -> tuple[float, ...]:
        """Per turn: the median of ``first``'s times over the median of ``second``'s."""
        return tuple(
            statistics.median(mine) / statistics.median(theirs)
            for mine, theirs in zip(self.first_turns_ms, self.second_turns_ms, strict=True)
        )

    @property
    def ratio(self) -> float:
        """The median over turns of the per-turn ratio: ``first``'s time as a multiple of ``second``'s."""
        return statistics.median(self.ratios)

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        """The ``confidence`` interval of :attr:`ratio`: :func:`median_interval` of the
        :func:`block_medians` of the turns' ratios (see the module's notes)."""
        return median_interval(block_medians(self.ratios), confidence)

    def verdict(self, goal: float, confidence: float = CONFIDENCE) -> str:
        """``met``, ``not met`` or ``not shown`` for the goal "``first`` at most ``goal``× ``second``"
        (``not shown`` too with fewer turns than :func:`min_values`: no interval reaches ``confidence``)."""
        if len(self.ratios) < min_values(confidence):
            return "not shown"
        low, high = self.interval(confidence)
        return "met" if high <= goal else ("not met" if low > goal else "not shown")

    def to_dict(self) -> dict[str, Any]:
        low, high = self.interval()
        return {
            "first": self.first,
            "second": self.second,
            "turns": len(self.ratios),
            "first_median_ms": statistics.median(t for turn in self.first_turns_ms for t in turn),
            "second_median_ms": statistics.median(t for turn in self.second_turns_ms for t in turn),
            "ratio": self.ratio,
            "interval": [low, high],
            "confidence": CONFIDENCE,
            "blocks": len(block_medians(self.ratios)),
            "ratios": list(self.ratios),
        }


def run_pairs(
    model_name: str,
    pairs: Sequence[tuple[str, str]],
    *,
    batch: int = 1,
    resolution: int = 224,
    threads: int = 2,
    turns: int = TURNS,
    repeats: int = REPEATS,
    warmup: int = WARMUP,
    pause_s: float = PAUSE_S,
    system_malloc: bool = False,
    workdir: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
    pretrained: bool = False,
    calibration: torch.Tensor | None = None,
) -> list[PairedResult]:
    """Prepare the variants of ``pairs`` (as ``mobilenets bench`` does), then compare each pair.

    A variant paired with itself (an A/A comparison) shows the method's own noise: its interval
    should contain 1. Needs ``os.fork`` (Linux, macOS). Prepared files go to ``workdir`` (reused
    from there when present) or a temporary folder. An ``ExternalError`` if a variant fails.
    ``pretrained`` and ``calibration``: as :func:`~mobilenets.bench.inference.run_bench` takes them.
    """
    for label, value in (("repeats", repeats), ("warmup", warmup), ("threads", threads), ("batch", batch)):
        if value < 1:
            raise UsageError(f"{label} must be >= 1, got {value}")
    if turns < min_values():
        raise UsageError(
            f"turns must be >= {min_values()} for a {CONFIDENCE:.0%} interval of the ratio (fewer turns "
            f"cannot bracket its median that often), got {turns}"
        )
    if pause_s < 0:
        raise UsageError(f"pause_s must be >= 0, got {pause_s}")
    if not hasattr(os, "fork"):
        raise UsageError("a paired comparison needs os.fork (Linux or macOS)")
    for pair in pairs:
        if len(pair) != 2:
            raise UsageError(f"each pair names two variants, got {pair!r}")
    variants = check_variants(tuple(dict.fromkeys(name for pair in pairs for name in pair)))
    say = progress or (lambda line: None)
    results: list[PairedResult] = []
    with tempfile.TemporaryDirectory(prefix="mobilenets-pairs-") as tmp:
        root = Path(workdir) if workdir else Path(tmp)
        files = WorkFiles(root, model_name, batch, resolution, pretrained, calibration_tag(calibration))
        skipped = prepare(files, variants, calibration)
        if skipped:
            raise UsageError("cannot compare " + "; ".join(f"{name}: {why}" for name, why in skipped.items()))
        with TimingProcesses(files.root / "timing.log") as processes:
            for first, second in pairs:
                first_turns, second_turns = processes.run_pair(
                    ChildSpec(first, files, threads, repeats, warmup, system_malloc),
                    ChildSpec(second, files, threads, repeats, warmup, system_malloc),
                    turns=turns,
                    pause_s=pause_s,
                )
                result = PairedResult(
                    first,
                    second,
                    tuple(tuple(turn) for turn in first_turns),
                    tuple(tuple(turn) for turn in second_turns),
                )
                low, high = result.interval()
                say(f"{first} / {second}: {result.ratio:.3f}× (95% interval {low:.3f}-{high:.3f}×)")
                results.append(result)
    return results
