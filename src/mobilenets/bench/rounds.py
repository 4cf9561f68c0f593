"""Variants taking turns over rounds, each turn a fresh timing process.

In round ``r`` every variant runs once, in the order of the list rotated by ``r`` places, so that no
variant always follows the same neighbour or always runs first (right after the preparing step) or
last. A slow spell of a shared machine then falls on different variants in different rounds instead
of on one, and the spread over rounds shows it. A variant whose timing process fails is dropped
from the later rounds and reported as skipped, with why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import ExternalError
from .child import ChildReport


def rotation(variants: Sequence[str], rounds: int) -> list[tuple[str, ...]]:
    """The order of each round: ``variants`` rotated one place further each round."""
    count = len(variants)
    return [tuple(variants[(r + i) % count] for i in range(count)) for r in range(rounds)] if count else []


def run_rounds(
    variants: Sequence[str],
    *,
    rounds: int,
    measure: Callable[[str], ChildReport],
    progress: Callable[[int, dict[str, ChildReport]], None] | None = None,
) -> tuple[dict[str, list[ChildReport]], dict[str, str]]:
    """``measure`` each variant once per round, in :func:`rotation` order.

    Returns each variant's reports in round order, and the variants whose ``measure`` raised an
    :class:`~mobilenets.errors.ExternalError` (with its message; their earlier rounds are dropped).
    ``progress`` gets the round's index and its reports after each round.
    """
    reports: dict[str, list[ChildReport]] = {name: [] for name in variants}
    failed: dict[str, str] = {}
    for index, order in enumerate(rotation(variants, rounds)):
        this_round: dict[str, ChildReport] = {}
        for name in order:
            if name in failed:
                continue
            try:
                this_round[name] = measure(name)
            except ExternalError as error:
                failed[name] = f"round {index + 1}: {error}"
                continue
            reports[name].append(this_round[name])
        if progress is not None:
            progress(index, this_round)
    return {name: runs for name, runs in reports.items() if name not in failed}, failed
