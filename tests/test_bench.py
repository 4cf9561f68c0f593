"""``mobilenets bench``: each variant timed alone in a fresh process, variants taking turns over rounds.

The orchestration is checked with fake timing processes (fast); real runs check that every turn gets
its own process, that memory comes back from the same processes, and that a slow ordering that one
shared process used to get wrong (ONNX Runtime fp32 against int8) comes out right.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mobilenets.bench import fresh, inference
from mobilenets.bench.child import ChildReport, ChildSpec
from mobilenets.bench.fresh import TimingProcesses
from mobilenets.bench.inference import NOISY_SPREAD, BenchResult, run_bench
from mobilenets.bench.paired import PairedResult
from mobilenets.bench.prepare import prepare
from mobilenets.bench.rounds import round_orders, run_rounds
from mobilenets.bench.variants import check_variants
from mobilenets.bench.workfiles import WorkFiles, calibration_tag
from mobilenets.errors import ExternalError, UsageError

from .conftest import REPO_ROOT, SMALL_RES, imagenet_list, run_cli

SETTING = "glibc mallopt: M_MMAP_THRESHOLD=1 GiB, M_TRIM_THRESHOLD=2 GiB (freed memory reused)"


def _report(*times: float, pid: int = 1) -> ChildReport:
    return ChildReport(tuple(times), SETTING, pid, rss_mb=300.0, peak_rss_mb=320.0 + pid)


def _result(reports: dict[str, tuple[ChildReport, ...]], **skipped: str) -> BenchResult:
    return BenchResult("mobilenet_v2", 2, 224, 2, 2, 4, 1, reports, dict(skipped), "fork")


# --- orchestration, with fake timing processes ----------------------------------------------------------


@pytest.mark.parametrize("count", [2, 3, 4, 5, 6])
def test_round_orders_balance_places_and_who_follows_whom(count: int) -> None:
    variants = [chr(ord("a") + i) for i in range(count)]
    cycle = count if count % 2 == 0 else 2 * count  # an odd count needs the reversed rows too
    orders = round_orders(variants, cycle + 1)
    assert orders[cycle] == orders[0] and all(sorted(order) == variants for order in orders)
    for place in range(count):  # each variant in each place equally often
        assert sorted(order[place] for order in orders[:cycle]) == sorted(variants * (cycle // count))
    followers = collections.Counter((a, b) for order in orders[:cycle] for a, b in itertools.pairwise(order))
    assert set(followers) == {(a, b) for a in variants for b in variants if a != b}
    assert set(followers.values()) == {cycle // count}  # each neighbour equally often: no fixed carry-over


def test_round_orders_of_three_then_none() -> None:
    orders = [("a", "b", "c"), ("b", "c", "a"), ("c", "a", "b"), ("c", "b", "a")]  # then the reversals
    assert round_orders(["a", "b", "c"], 4) == orders
    assert round_orders([], 3) == []


def test_run_rounds_times_each_variant_once_a_round_and_drops_one_that_fails() -> None:
    calls: list[str] = []
    rounds_seen: list[tuple[int, list[str]]] = []

    def measure(name: str) -> ChildReport:
        calls.append(name)
        if name == "b" and calls.count("b") == 2:
            raise ExternalError("the timing process of b failed: boom")
        return _report(float(len(calls)), pid=len(calls))

    reports, failed = run_rounds(
        ["a", "b", "c"], rounds=3, measure=measure, progress=lambda i, r: rounds_seen.append((i, list(r)))
    )
    # round 1: a b c; round 2: b (fails) c a; round 3: c a (b no longer runs)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a"]
    assert set(reports) == {"a", "c"} and len(reports["a"]) == len(reports["c"]) == 3
    assert [report.times_ms[0] for report in reports["a"]] == [1.0, 6.0, 8.0]  # in round order
    assert failed == {"b": "round 2: the timing process of b failed: boom"}
    assert rounds_seen == [(0, ["a", "b", "c"]), (1, ["c", "a"]), (2, ["c", "a"])]


def test_spread_warning_flags_only_the_noisy_variant() -> None:
    steady = (_report(10.0, 10.1, 10.2, 10.0), _report(10.1, 10.0, 10.2, 10.1, pid=2))
    noisy = (_report(5.0, 9.0, 5.5, 12.0), _report(5.2, 14.0, 5.1, 8.0, pid=2))
    result = _result({"torchvision_eager": steady, "torchvision_ort_int8": noisy})
    spread = result.results["torchvision_ort_int8"]
    assert spread.spread_ms > NOISY_SPREAD * spread.median_ms  # the fixture is what it claims
    [warning] = result.warnings
    assert warning.startswith("torchvision_ort_int8: its timings spread over")
    assert "--rounds" in warning
    assert result.to_dict()["warnings"] == [warning]
    few = _result({"torchvision_eager": (_report(10.0, 30.0, 50.0),)})  # `--rounds 1 --repeats 3`
    assert few.results["torchvision_eager"].spread_ms == 40.0 and few.warnings  # not an IQR of 0
    two = _result({"torchvision_eager": (_report(10.0, 20.0),)}).results["torchvision_eager"]
    assert two.spread_ms == 10.0  # their range (quartiles by the exclusive method would give 15)


def test_report_keeps_the_keys_people_use_and_adds_rounds() -> None:
    reference = (_report(10.0, 12.0, 11.0, 10.0), _report(10.0, 11.0, 13.0, 12.0, pid=2))
    fast = (_report(4.0, 5.0, 4.0, 4.0, pid=3), _report(6.0, 6.0, 5.0, 6.0, pid=4))
    report = _result({"torchvision_eager": reference, "ours_eager": fast}, ours_int8="why").to_dict()
    assert {"cpu", "threads", "allocator", "batch", "resolution", "skipped", "rounds", "repeats"} <= set(
        report
    )
    assert report["allocator"] == SETTING and report["skipped"] == {"ours_int8": "why"}
    assert f"torch kernels {torch.backends.cpu.get_cpu_capability()}" in report["cpu"]
    row = report["ours_eager"]
    assert row["median_ms"] == 5.0 and row["per_image_ms"] == 2.5  # batch 2
    assert row["speedup_vs_torchvision_eager"] == pytest.approx(11.0 / 5.0)
    assert row["per_round_median_ms"] == [4.0, 6.0] and row["iqr_ms"] > 0
    assert row["rss_mb"] == 300.0 and row["peak_rss_mb"] == 324.0  # the highest peak of its processes
    assert report["torchvision_eager"]["speedup_vs_torchvision_eager"] == pytest.approx(1.0)
    json.dumps(report)  # the CLI prints it as JSON


def test_bad_requests_are_usage_errors_before_any_work() -> None:
    with pytest.raises(
        UsageError, match=r"unknown bench variant\(s\) tflite; expected from torchvision_eager"
    ):
        run_bench("mobilenet_v2", only=("ours_eager", "tflite"))
    with pytest.raises(UsageError, match="no bench variant given"):
        check_variants([])
    assert check_variants(["ours_eager", "ours_int8", "ours_eager"]) == ("ours_eager", "ours_int8")
    for option in ("rounds", "repeats", "warmup", "batch", "threads"):
        with pytest.raises(UsageError, match=f"{option} must be >= 1, got 0"):
            run_bench("mobilenet_v2", only=("ours_eager",), **{option: 0})  # type: ignore[arg-type]


def test_cli_prints_warnings_on_stderr_and_in_json(monkeypatch: pytest.MonkeyPatch) -> None:
    noisy = (_report(5.0, 9.0, 5.5, 12.0), _report(5.2, 14.0, 5.1, 8.0, pid=2))
    seen: dict[str, object] = {}

    def fake_run_bench(model: str, **options: object) -> BenchResult:
        seen.update(options, model=model)
        return _result({"torchvision_eager": noisy})

    monkeypatch.setattr(inference, "run_bench", fake_run_bench)
    code, stdout, err = run_cli(["bench", "--batch", "2", "--rounds", "3", "--json", "--system-malloc"])
    assert code == 0, err
    assert "mobilenets bench: warning: torchvision_eager: its timings spread" in err
    assert json.loads(stdout)["warnings"] and json.loads(stdout)["rounds"] == 2
    assert seen["batch"] == 2 and seen["rounds"] == 3 and seen["system_malloc"] is True  # --batch: alias
    assert seen["warmup"] == inference.WARMUP == 5
    code, stdout, err = run_cli(["bench", "--batch-size", "4", "--repeats", "7", "--warmup", "2"])
    assert code == 0, err
    assert seen["batch"] == 4 and seen["repeats"] == 7 and seen["warmup"] == 2
    assert "each variant alone in a fresh process, 2 rounds × 4 timed calls" in stdout
    assert "torchvision_eager" in stdout.splitlines()[2]
    assert "speed vs torchvision_eager" in stdout.splitlines()[1] and " 1.00× " in stdout.splitlines()[2]
    assert "faster" not in stdout  # a ratio below 1 is slower: the column says speed, not "faster"


def test_cli_refuses_bad_variants_and_counts_with_exit_2() -> None:
    code, _, err = run_cli(["bench", "--variants", "nope"])
    assert code == 2 and "unknown bench variant(s) nope" in err
    code, _, err = run_cli(["bench", "--variants", "ours_eager", "--rounds", "0"])
    assert code == 2 and "rounds must be >= 1, got 0" in err
    # Every variant skipped: an error naming why, not an empty table with exit status 0.
    argv = ["bench", "--model", "efficientnet_lite0", "--resolution", str(SMALL_RES), "--json"]
    code, stdout, err = run_cli([*argv, "--variants", "torchvision_eager"])
    assert code == 2 and stdout == "", stdout
    assert "no variant could be timed (torchvision_eager: torchvision has no efficientnet_lite0)" in err


# --- real timing processes -------------------------------------------------------------------------------
# One thread: these check the mechanism, and PyTorch's 2-thread pool crawls on a busy shared machine.


def test_every_turn_runs_in_its_own_fresh_process() -> None:
    only = ("torchvision_eager", "ours_eager", "ours_optimize")  # ONNX variants: in the slow test below
    result = run_bench(
        "mobilenet_v3_small",
        batch=2,
        resolution=SMALL_RES,
        threads=1,
        rounds=2,
        repeats=3,
        warmup=1,
        only=only,
    )
    assert set(result.reports) == set(only) and not result.skipped
    pids = [report.pid for runs in result.reports.values() for report in runs]
    assert len(pids) == 2 * len(only) == len(set(pids)) and os.getpid() not in pids
    report = result.to_dict()
    for name in only:
        assert len(result.reports[name]) == 2 and len(result.results[name].times_ms) == 6
        assert report[name]["median_ms"] > 0 and len(report[name]["per_round_median_ms"]) == 2
        assert report[name]["peak_rss_mb"] >= report[name]["rss_mb"] > 50  # torch alone is more
    assert report["torchvision_eager"]["speedup_vs_torchvision_eager"] == pytest.approx(1.0)
    assert "M_MMAP_THRESHOLD" in report["allocator"]  # applied in the timing processes


def test_prepare_skips_what_torchvision_lacks(tmp_path: Path) -> None:
    files = WorkFiles(tmp_path, "efficientnet_lite0", 1, SMALL_RES)
    skipped = prepare(files, ("torchvision_eager", "ours_eager"))
    assert skipped == {"torchvision_eager": "torchvision has no efficientnet_lite0"}
    assert files.input.is_file() and files.weights("ours").is_file()
    assert not files.weights("torchvision").exists()
    reports = {"ours_eager": (_report(4.0, 5.0, 4.0, 4.0),)}
    assert _result(reports).to_dict()["ours_eager"]["speedup_vs_torchvision_eager"] is None


def test_prepare_with_the_packaged_weights_and_real_calibration(tmp_path: Path) -> None:
    """--pretrained: the packaged weights on both sides, in their own file names (a folder serves seeded
    and packaged runs apart); weights the timing processes' plain build would compute differently
    (EfficientNet-Lite0's TF padding) are refused; --calib needs --pretrained."""
    import mobilenets

    seeded, packaged = (WorkFiles(tmp_path, "mobilenet_v2", 1, SMALL_RES, flag) for flag in (False, True))
    assert (
        seeded.weights("ours") != packaged.weights("ours")
        and "pretrained" in packaged.openvino("ours", int8=True).name
    )
    assert prepare(packaged, ("ours_eager", "torchvision_eager")) == {}
    weights = torch.load(packaged.weights("ours"), weights_only=True)
    reference = mobilenets.create_model("mobilenet_v2", pretrained=True).state_dict()
    assert all(torch.equal(weights[key], value) for key, value in reference.items())
    assert not seeded.weights("ours").exists()
    lite = WorkFiles(tmp_path, "efficientnet_lite0", 1, SMALL_RES, True)
    with pytest.raises(UsageError, match="packaged weights of efficientnet_lite0 are built with options"):
        prepare(lite, ("ours_eager",))
    code, _, err = run_cli(["bench", "--variants", "ours_eager", "--calib", "digits"])
    assert code == 2 and "--calib: only with --pretrained" in err
    code, _, err = run_cli(["bench", "--variants", "ours_eager", "--pretrained", "--calib-images", "9"])
    assert code == 2 and "--calib-images: only with --calib" in err
    pair = ["bench", "--pair", "ours_int8,ours_eager", "--pretrained", "--calib", str(imagenet_list())]
    pair += ["--calib-images", "4", "--resolution", str(SMALL_RES), "--turns", "6", "--repeats", "2"]
    code, out, err = run_cli([*pair, "--threads", "1", "--json"])
    assert code == 0, err
    assert json.loads(out)["pairs"][0]["first"] == "ours_int8"


def test_int8_file_names_say_their_calibration_so_a_folder_never_serves_another(tmp_path: Path) -> None:
    """A bench folder reused with other calibration images must not time the int8 files of the first:
    int8 names carry a digest of the images (float names do not), and prepare refuses a mismatch."""
    images = torch.rand(4, 3, SMALL_RES, SMALL_RES)
    tag = calibration_tag(images)
    assert tag == calibration_tag(images.clone()) != calibration_tag(images * 0.5)
    assert calibration_tag(None) == "random" and tag.startswith("calib-")
    seeded = WorkFiles(tmp_path, "mobilenet_v2", 1, SMALL_RES)
    real = dataclasses.replace(seeded, calibration=tag)
    assert seeded.onnx("ours", int8=False) == real.onnx("ours", int8=False)
    assert seeded.openvino("torchvision", int8=False) == real.openvino("torchvision", int8=False)
    int8_names = [
        (files.onnx("ours", int8=True), files.pte(int8=True), files.pt2e_int8) for files in (seeded, real)
    ]
    assert all(mine != theirs and tag in theirs.name for mine, theirs in zip(*int8_names, strict=True))
    with pytest.raises(UsageError, match="named for calibration 'random', not for the images given"):
        prepare(seeded, ("ours_int8",), images)
    assert prepare(real, ("ours_int8",), images) == {} and prepare(seeded, ("ours_int8",)) == {}
    assert seeded.onnx("ours", int8=True).read_bytes() != real.onnx("ours", int8=True).read_bytes()


def test_runtime_latency_goal_is_not_met_against_an_anchor_never_timed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """benchmarks/runtime_latency.py: the int8 goal is against every int8 anchor, so one that was not
    timed leaves it not shown, named with why, instead of judged on the anchors that remain."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    latency = importlib.import_module("runtime_latency")
    fast, slow = (_report(1.0, 1.0),), (_report(2.0, 2.0),)
    reports = {"ours_openvino_bf16": fast, "torchvision_openvino_bf16": slow, "ours_openvino_int8": fast}
    reports["torchvision_openvino_int8"] = slow
    result = _result(reports, torchvision_ort_int8="onnxruntime not installed")
    pairs = latency.goal_pairs(result)
    assert pairs == [
        ("ours_openvino_bf16", "torchvision_openvino_bf16"),
        ("ours_openvino_int8", "torchvision_openvino_int8"),
    ]
    paired = [PairedResult(first, second, ((1.0,),) * 10, ((2.0,),) * 10) for first, second in pairs]
    text = latency.verdict(result, paired)
    assert text.startswith("Float goal (ours ≤ 1.0× OpenVINO's default): ours_openvino_bf16 at 0.500×")
    float_pair = "(95% interval 0.500–0.500× over 10 paired turns in 10 blocks: met; the rounds alone: "
    assert f"{float_pair}0.50×, 0.50–0.50×): met." in text
    missing = (
        "no comparison with torchvision_ort_int8 (onnxruntime not installed); ours_openvino_int8 at 0.500×"
    )
    assert missing in text and text.endswith("0.50×, 0.50–0.50×): not shown.")
    timed = _result({**reports, "torchvision_ort_int8": slow})
    pairs = latency.goal_pairs(timed)
    assert pairs[1] == ("ours_openvino_int8", "torchvision_ort_int8") and len(pairs) == 3
    paired = [PairedResult(first, second, ((1.0,),) * 10, ((2.0,),) * 10) for first, second in pairs]
    assert latency.verdict(timed, paired).endswith(": met.")
    # A busy machine: an anchor whose rounds spread widely leaves its comparison unjudged.
    busy = _result({**reports, "torchvision_ort_int8": (_report(1.0, 3.0, 2.0, 4.0),)})
    assert set(busy.noisy) == {"torchvision_ort_int8"}
    text = latency.verdict(busy, paired)
    assert text.endswith(
        "not judged: the rounds spread over 25% of their median (torchvision_ort_int8 100%), so the machine "
        "was busy; rerun it idle; ours_openvino_int8 at 0.500× torchvision_openvino_int8 (95% interval "
        "0.500–0.500× over 10 paired turns in 10 blocks: met; the rounds alone: 0.50×, 0.50–0.50×): "
        "not shown."
    ), text


def test_runtime_latency_pairs_the_uint8_input_ir_like_for_like_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our fastest int8 being the IR taking uint8 input, the goal is judged against the anchors as
    before, and a third pair against torchvision's IR given the same input says how much of the lead
    the input contract is; it does not enter the goal's verdict."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    latency = importlib.import_module("runtime_latency")
    reports = {
        "ours_openvino_uint8": (_report(1.0, 1.0),),
        "ours_openvino_int8": (_report(1.1, 1.1),),
        "torchvision_ort_int8": (_report(2.0, 2.0),),
        "torchvision_openvino_int8": (_report(2.0, 2.0),),
        "torchvision_openvino_uint8": (_report(1.2, 1.2),),
    }
    result = _result(reports)
    pairs = latency.goal_pairs(result)
    assert pairs == [
        ("ours_openvino_uint8", "torchvision_ort_int8"),
        ("ours_openvino_uint8", "torchvision_openvino_int8"),
        ("ours_openvino_uint8", "torchvision_openvino_uint8"),
    ]
    seconds = {
        "torchvision_ort_int8": 2.0,
        "torchvision_openvino_int8": 2.0,
        "torchvision_openvino_uint8": 1.2,
    }
    paired = [
        PairedResult(first, second, ((1.0,),) * 10, ((seconds[second],),) * 10) for first, second in pairs
    ]
    text = latency.verdict(result, paired)
    assert (
        "0.500–0.500× over 10 paired turns in 10 blocks: met; the rounds alone: 0.50×, 0.50–0.50×): met."
        in text
    )
    assert text.endswith(
        " Like for like, torchvision's int8 IR taking the same uint8 input: ours_openvino_uint8 at 0.833× "
        "torchvision_openvino_uint8 (95% interval 0.833–0.833× over 10 paired turns in 10 blocks: not met; "
        "the rounds alone: 0.83×, 0.83–0.83×)."
    ), text


def test_prepare_skips_what_a_plain_install_lacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pip install mobilenets` without the deploy extra: the runtimes' variants are skipped, saying why."""
    import importlib.util

    real = importlib.util.find_spec
    lacking = {"onnx", "onnxruntime", "onnxscript", "openvino", "nncf", "executorch", "torchao"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in lacking else real(name, *a)
    )
    files = WorkFiles(tmp_path, "mobilenet_v2", 1, SMALL_RES)
    variants = ("ours_eager", "ours_int8", "ours_openvino_int8", "ours_executorch_fp32", "ours_pt2e_int8")
    skipped = prepare(files, variants)
    assert set(skipped) == set(variants[1:]) and "ours_eager" not in skipped
    assert skipped["ours_openvino_int8"] == (
        "onnx, onnxscript, openvino, nncf not installed: pip install 'mobilenets[deploy]'"
    )


def test_a_runtime_that_fails_to_prepare_skips_only_its_variants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed but broken (its native module will not import, say): the other variants still run."""
    from mobilenets.bench import prepare as preparing

    def broken(*args: object) -> None:
        raise UsageError("ONNX export needs the onnx package (it failed to import)")

    monkeypatch.setattr(preparing, "_onnx", broken)
    files = WorkFiles(tmp_path, "mobilenet_v2", 1, SMALL_RES)
    skipped = prepare(files, ("ours_eager", "ours_ort_fp32"))
    assert skipped == {
        "ours_ort_fp32": "could not be prepared: ONNX export needs the onnx package (it failed to import)"
    }
    assert files.weights("ours").exists()


def _processes_with(marker: str) -> list[int]:
    """Pids of the processes whose environment holds ``marker`` (Linux's /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def test_sigterm_mid_run_leaves_no_timing_process_or_folder(tmp_path: Path) -> None:
    """A scheduler's kill (`timeout`, SIGTERM) ends bench like Ctrl-C: the timing server, the turn it
    forked and the temporary folder of prepared files all go."""
    marker = f"MOBILENETS_TEST_MARK={os.getpid()}-{tmp_path.name}"
    env = {**os.environ, "TMPDIR": str(tmp_path), marker.split("=")[0]: marker.split("=")[1]}
    argv = ["bench", "--resolution", "32", "--variants", "ours_eager", "--rounds", "1", "--threads", "1"]
    argv += ["--repeats", "1000000", "--warmup", "1"]
    process = subprocess.Popen(
        [sys.executable, "-m", "mobilenets", *argv], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while len(_processes_with(marker)) < 3 and time.monotonic() < deadline:  # bench, server, turn
            time.sleep(0.2)
        assert len(_processes_with(marker)) >= 3 and list(tmp_path.glob("mobilenets-bench-*"))
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130 and "mobilenets bench: interrupted" in stderr, stderr[-2000:]
    assert "Traceback" not in stderr
    time.sleep(0.5)  # the killed processes' exit
    assert _processes_with(marker) == [] and list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def timing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TimingProcesses, Path]]:
    """One timing server for the tests below (starting one imports torch: seconds)."""
    folder = tmp_path_factory.mktemp("timing")
    with TimingProcesses(folder / "timing.log") as processes:
        yield processes, folder


def test_timing_processes_apply_the_allocator_setting_and_report_failures(
    timing: tuple[TimingProcesses, Path],
) -> None:
    processes, folder = timing
    files = WorkFiles(folder / "small", "mobilenet_v3_small", 1, SMALL_RES)
    prepare(files, ("ours_eager",))
    default = processes.run(ChildSpec("ours_eager", files, 1, 2, 1))
    system = processes.run(ChildSpec("ours_eager", files, 1, 2, 1, system_malloc=True))
    assert "M_MMAP_THRESHOLD" in default.allocator and system.allocator.startswith("system malloc")
    assert len({default.pid, system.pid, os.getpid()}) == 3 and len(system.times_ms) == 2
    files.weights("ours").unlink()
    with pytest.raises(ExternalError, match="timing process of ours_eager failed: FileNotFoundError"):
        processes.run(ChildSpec("ours_eager", files, 1, 1, 1))
    with pytest.raises(ExternalError, match="timing process of nope failed"):
        processes.run(ChildSpec("nope", files, 1, 1, 1))
    assert processes.run(ChildSpec("ours_eager", default_files(folder), 1, 1, 1)).times_ms  # still serving


def default_files(folder: Path, batch: int = 1) -> WorkFiles:
    files = WorkFiles(folder / "v2", "mobilenet_v2", batch, 128)
    if not files.input.exists():
        prepare(files, ("ours_eager",))
    return files


def test_peak_memory_of_a_variant_grows_with_its_batch(timing: tuple[TimingProcesses, Path]) -> None:
    processes, folder = timing
    small, large = (processes.run(ChildSpec("ours_eager", default_files(folder, b), 1, 1, 2)) for b in (1, 8))
    growth = [report.peak_rss_mb - report.rss_mb for report in (small, large)]  # type: ignore[operator]
    # batch 8 at 128×128: the 96-channel 64×64 expansion alone is 12.6 MB, and it is live with its input
    assert growth[1] > growth[0] + 10, growth


def test_without_fork_each_turn_is_a_new_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fresh, "start_method", lambda: "new interpreter")  # as on Windows
    files = WorkFiles(tmp_path, "mobilenet_v3_small", 1, SMALL_RES)
    prepare(files, ("ours_eager",))
    with TimingProcesses(tmp_path / "timing.log") as processes:
        reports = [processes.run(ChildSpec("ours_eager", files, 1, 2, 1)) for _ in range(2)]
    assert len({report.pid for report in reports} | {os.getpid()}) == 3
    assert all(len(report.times_ms) == 2 for report in reports)


@pytest.mark.slow
def test_onnx_runtime_int8_comes_out_faster_than_fp32() -> None:
    """In one shared process, ONNX Runtime's spinning threads once ranked int8 behind fp32 (7.6 vs 4.7 ms).

    Each alone, int8 runs about twice as fast (x86 int8 kernels: u8×s8 on AVX2, VNNI where present).
    At 128×128 (the export is the slow part) the gap stayed 1.7-1.8× with 2 threads even with four
    times more runnable processes than cores; at 96×96 it shrank to 1.1× there.
    """
    only = ("torchvision_ort_fp32", "torchvision_ort_int8")
    result = run_bench(
        "mobilenet_v2", batch=1, resolution=128, threads=2, rounds=3, repeats=10, warmup=3, only=only
    )
    medians = {name: latency.median_ms for name, latency in result.results.items()}
    assert medians["torchvision_ort_int8"] < medians["torchvision_ort_fp32"], medians


@pytest.mark.slow
def test_cli_times_the_device_runtimes_alone() -> None:
    """ExecuTorch (XNNPACK) and OpenVINO variants, fp32/bf16 and int8, prepared once, timed in turns.

    mobilenet_v2: with it this test took 89 s against 139 s with mobilenet_v3_small (its SE blocks and
    hard-swish lower slower), and lowering is most of it.
    """
    variants = (
        "ours_executorch_fp32",
        "ours_executorch_int8",
        "torchvision_openvino_bf16",
        "ours_openvino_int8",
    )
    argv = ["bench", "--model", "mobilenet_v2", "--resolution", str(SMALL_RES), "--threads", "1"]
    argv += ["--rounds", "1", "--repeats", "3", "--warmup", "1", "--variants", ",".join(variants), "--json"]
    code, stdout, err = run_cli(argv)
    assert code == 0, err
    report = json.loads(stdout)
    for name in variants:
        assert report[name]["median_ms"] > 0 and len(report[name]["per_round_median_ms"]) == 1, name


def test_a_batch_too_large_for_memory_is_a_usage_error() -> None:
    argv = ["bench", "--variants", "ours_eager", "--rounds", "1", "--repeats", "1", "--warmup", "1"]
    code, _, err = run_cli([*argv, "--batch-size", "1000000000"])
    assert code == 2 and "does not fit in this machine's memory" in err and "Traceback" not in err, err
