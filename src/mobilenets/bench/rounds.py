"""Variants taking turns over rounds, each turn a fresh timing process.

Every variant runs once a round, in orders of a Williams design (a Latin square balanced for
carry-over): over ``n`` rounds of ``n`` variants (``2n`` rounds when ``n`` is odd) each variant runs
in each place equally often and right after each other variant equally often. So none always runs
first (right after the preparing step) or last, and none always inherits the same neighbour's cache
and heat. A slow spell of a shared machine then falls on different variants in different rounds
instead of on one, and the spread over rounds shows it. A variant whose timing process fails is dropped
from the later rounds and reported as skipped, with why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import ExternalError
from .child import ChildReport


def round_orders(variants: Sequence[str], rounds: int) -> list[tuple[str, ...]]:
    """The order of each of ``rounds`` rounds: the rows of a Williams design over ``variants``, repeated.

    Row ``r`` is the sequence 0, 1, n-1, 2, n-2, ... shifted by ``r``; for an odd count the rows are
    followed by their reversals, since no single square balances who follows whom then.
    """
    count = len(variants)
    base = [0]
    low, high = 1, count - 1
    while len(base) < count:
        base.append(low)
        low += 1
        if len(base) < count:
            base.append(high)
            high -= 1
    rows = [[(place + shift) % count for place in base] for shift in range(count)]
    if count % 2:
        rows += [row[::-1] for row in rows]
    return [tuple(variants[i] for i in rows[r % len(rows)]) for r in range(rounds)] if count else []


def run_rounds(
    variants: Sequence[str],
    *,
    rounds: int,
    measure: Callable[[str], ChildReport],
    progress: Callable[[int, dict[str, ChildReport]], None] | None = None,
) -> tuple[dict[str, list[ChildReport]], dict[str, str]]:
    """``measure`` each variant once per round, in :func:`round_orders` order.

    Returns each variant's reports in round order, and the variants whose ``measure`` raised an
    :class:`~mobilenets.errors.ExternalError` (with its message; their earlier rounds are dropped).
    ``progress`` gets the round's index and its reports after each round.
    """
    reports: dict[str, list[ChildReport]] = {name: [] for name in variants}
    failed: dict[str, str] = {}
    for index, order in enumerate(round_orders(variants, rounds)):
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
