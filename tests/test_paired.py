"""Paired comparisons (``mobilenets.bench.paired``): two variants loaded side by side, taking turns.

The statistics are checked against the binomial distribution; real runs check the turns, an A/A
comparison's ratio, and that a failing side is reported by name while the timing server goes on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mobilenets.bench import fresh
from mobilenets.bench.child import ChildSpec
from mobilenets.bench.fresh import TimingProcesses
from mobilenets.bench.paired import PairedResult, block_medians, median_interval, min_values, run_pairs
from mobilenets.bench.prepare import prepare
from mobilenets.bench.workfiles import WorkFiles
from mobilenets.errors import ExternalError, UsageError

from .conftest import SMALL_RES, run_cli


def _coverage(n: int, k: int) -> float:
    """Probability that the k-th smallest and k-th largest of n draws bracket the median."""
    return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n


@pytest.mark.parametrize("n", [6, 10, 40, 100])
def test_median_interval_is_the_narrowest_order_statistics_with_95_percent_coverage(n: int) -> None:
    values = [float(v) for v in range(1, n + 1)]  # the k-th smallest is k
    low, high = median_interval(list(reversed(values)))
    k = int(low)
    assert high == n + 1 - k
    assert _coverage(n, k) >= 0.95 > _coverage(n, k + 1)


def test_median_interval_with_too_few_values_is_the_range_and_bad_input_is_refused() -> None:
    assert median_interval([2.0, 1.0, 3.0]) == (1.0, 3.0)
    assert min_values() == 6 and _coverage(6, 1) >= 0.95 > _coverage(5, 1)
    few = PairedResult("a", "b", ((1.0,),) * 5, ((2.0,),) * 5)  # every turn 0.5×, but only 5 of them
    assert few.verdict(0.8) == "not shown"
    with pytest.raises(UsageError, match=r"turns must be >= 6 for a 95% interval"):
        run_pairs("mobilenet_v2", [("ours_eager", "torchvision_eager")], turns=5)
    with pytest.raises(UsageError, match="at least one value"):
        median_interval([])
    with pytest.raises(UsageError, match="confidence"):
        median_interval([1.0, 2.0], confidence=1.5)


def test_paired_result_ratios_pair_each_turn_with_the_other_sides_turn() -> None:
    # The machine slows down 3× halfway: each turn's ratio stays 0.5, the pooled times do not.
    first = tuple((1.0 * speed, 1.1 * speed, 0.9 * speed) for speed in [1] * 5 + [3] * 5)
    second = tuple((2.0 * speed, 2.2 * speed, 1.8 * speed) for speed in [1] * 5 + [3] * 5)
    result = PairedResult("a", "b", first, second)
    assert result.ratios == pytest.approx([0.5] * 10)
    assert result.ratio == pytest.approx(0.5) and result.interval() == pytest.approx((0.5, 0.5))
    assert result.verdict(0.8) == "met" and result.verdict(0.4) == "not met"
    spread = PairedResult("a", "b", tuple((r,) for r in (0.7, 0.75, 0.8, 0.85, 0.9, 0.95)), ((1.0,),) * 6)
    assert spread.verdict(0.8) == "not shown"  # the interval of 6 turns is their range: 0.7-0.95
    assert spread.to_dict()["turns"] == 6 and spread.to_dict()["interval"] == pytest.approx([0.7, 0.95])


def test_the_interval_is_over_blocks_of_turns_so_a_slow_spell_cannot_narrow_it() -> None:
    """Turns next to each other share the machine's state: ten spells of ten turns, each at its own
    ratio, are ten draws, not a hundred: over single turns the interval would be 0.76-0.82."""
    assert block_medians([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], blocks=3) == [1.5, 4.0, 6.5]  # runs of 2, 3, 2
    assert block_medians([3.0, 1.0], blocks=10) == [3.0, 1.0]  # fewer values: each its own block
    spells = [0.70, 0.86, 0.74, 0.80, 0.88, 0.72, 0.84, 0.76, 0.78, 0.82]
    result = PairedResult("a", "b", tuple((spell,) for spell in spells for _ in range(10)), ((1.0,),) * 100)
    assert median_interval(result.ratios) == pytest.approx((0.76, 0.82))  # the turns, as if independent
    assert result.interval() == pytest.approx((0.72, 0.86))  # the second lowest and highest spell
    assert result.verdict(0.9) == "met" and result.verdict(0.8) == "not shown"
    assert result.to_dict()["blocks"] == 10


def test_a_variant_against_itself_comes_out_even_turn_by_turn(tmp_path: Path) -> None:
    (result,) = run_pairs(
        "mobilenet_v3_small", [("ours_eager", "ours_eager")], resolution=SMALL_RES, threads=1,
        turns=8, repeats=3, warmup=2, pause_s=0.0, workdir=tmp_path,
    )  # fmt: skip
    assert len(result.first_turns_ms) == len(result.second_turns_ms) == 8
    assert all(len(turn) == 3 and min(turn) > 0 for turn in result.first_turns_ms + result.second_turns_ms)
    assert 0.5 < result.ratio < 2.0, result.ratios  # the same model: within noise of 1


def test_a_failing_side_is_named_and_the_server_serves_on(tmp_path: Path) -> None:
    files = WorkFiles(tmp_path, "mobilenet_v3_small", 1, SMALL_RES)
    prepare(files, ("ours_eager",))
    with TimingProcesses(tmp_path / "timing.log") as processes:
        good = ChildSpec("ours_eager", files, 1, 2, 1)
        with pytest.raises(ExternalError, match="ours_eager and nope failed: nope: "):
            processes.run_pair(good, ChildSpec("nope", files, 1, 2, 1), turns=2, pause_s=0.0)
        first, second = processes.run_pair(good, good, turns=3, pause_s=0.0)
        assert len(first) == len(second) == 3 and all(len(turn) == 2 for turn in first)
        assert processes.run(good).times_ms  # one-off turns still work on the same server


def test_paired_comparisons_need_fork_and_valid_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UsageError, match="turns must be >= 6"):
        run_pairs("mobilenet_v2", [("ours_eager", "torchvision_eager")], turns=0)
    for batch in (0, -2):  # not an empty tensor timed, nor a traceback from making one
        with pytest.raises(UsageError, match=f"batch must be >= 1, got {batch}"):
            run_pairs("mobilenet_v2", [("ours_eager", "torchvision_eager")], batch=batch)
    with pytest.raises(UsageError, match="each pair names two variants"):
        run_pairs("mobilenet_v2", [("ours_eager",)])  # type: ignore[list-item]
    with pytest.raises(UsageError, match="unknown bench variant"):
        run_pairs("mobilenet_v2", [("ours_eager", "nope")])
    monkeypatch.setattr(fresh, "start_method", lambda: "new interpreter")  # as on Windows
    files = WorkFiles(tmp_path, "mobilenet_v3_small", 1, SMALL_RES)
    prepare(files, ("ours_eager",))
    with TimingProcesses(tmp_path / "timing.log") as processes:
        spec = ChildSpec("ours_eager", files, 1, 2, 1)
        with pytest.raises(ExternalError, match=r"needs os\.fork"):
            processes.run_pair(spec, spec, turns=2, pause_s=0.0)


def test_cli_pair_prints_the_ratio_and_its_interval() -> None:
    argv = ["bench", "--model", "mobilenet_v3_small", "--resolution", str(SMALL_RES), "--threads", "1"]
    argv += ["--pair", "ours_eager,torchvision_eager", "--turns", "6", "--repeats", "2", "--warmup", "1"]
    code, stdout, err = run_cli([*argv, "--json"])
    assert code == 0, err
    (pair,) = json.loads(stdout)["pairs"]
    assert (pair["first"], pair["second"], pair["turns"]) == ("ours_eager", "torchvision_eager", 6)
    low, high = pair["interval"]
    assert low <= pair["ratio"] <= high and len(pair["ratios"]) == 6
    code, _, err = run_cli(["bench", "--pair", "ours_eager"])
    assert code == 2 and "--pair takes two variants as A,B; got 'ours_eager'" in err
    code, _, err = run_cli(["bench", "--pair", "ours_eager,torchvision_eager", "--rounds", "3"])
    assert code == 2 and "--rounds: to rounds of fresh processes, not to --pair" in err
    code, _, err = run_cli(["bench", "--turns", "6"])
    assert code == 2 and "--turns: only with --pair" in err


def test_cli_pair_warms_up_as_run_pairs_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --warmup a pair takes run_pairs' own warm-up (spinning pools settle), not the table's 5."""
    from mobilenets.bench import paired

    seen: dict[str, object] = {}
    monkeypatch.setattr(paired, "run_pairs", lambda model, pairs, **options: seen.update(options) or [])
    code, _, err = run_cli(["bench", "--pair", "ours_eager,torchvision_eager", "--json"])
    assert code == 0 and seen["warmup"] == paired.WARMUP == 20, err
    code, _, err = run_cli(["bench", "--pair", "ours_eager,torchvision_eager", "--warmup", "3", "--json"])
    assert code == 0 and seen["warmup"] == 3, err
