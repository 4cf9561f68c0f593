"""The command line: exit status, stdout and stderr as a user sees them.

Most commands run in this process (a fresh interpreter costs ~6 s of imports on 2 cores); the
console entry point itself and the demo run in a subprocess, exactly as a user starts them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mobilenets.errors import UsageError

from .conftest import run_cli as run_cli_argv


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``mobilenets ARGS`` in this process, as a ``CompletedProcess`` like :func:`run_cli_process`'s."""
    return subprocess.CompletedProcess(list(args), *run_cli_argv(list(args)))


def run_cli_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m mobilenets ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "mobilenets", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_console_entry_point_lists_models_and_reports_bad_input() -> None:
    result = run_cli_process("list", "--names-only")
    assert result.returncode == 0 and "mobilenet_v2" in result.stdout.split()
    bad = run_cli_process("summary", "mobilenet_v5")
    assert bad.returncode == 2 and "unknown model 'mobilenet_v5'" in bad.stderr
    assert "Traceback" not in bad.stderr
    # A library warning is one line on stderr, like an error: no source path, no source line.
    warned = run_cli_process("summary", "mobilenet_v1", "--width-mult", "0.25", "--memory-efficient", "4")
    assert warned.returncode == 0 and warned.stderr.startswith(
        "mobilenets summary: warning: memory_efficient"
    )
    assert len([line for line in warned.stderr.splitlines() if "warning" in line]) == 1, warned.stderr
    assert ".py:" not in warned.stderr, warned.stderr
    # argparse's own refusals too: one line (not the 12-line usage block), status 2
    choice = run_cli_process("summary", "mobilenet_v2", "--dtype", "float64")
    assert choice.returncode == 2 and choice.stderr.count("\n") == 1, choice.stderr
    assert choice.stderr.startswith("mobilenets summary: error: argument --dtype: invalid choice: 'float64'")
    assert choice.stderr.rstrip().endswith("(`mobilenets summary --help` lists the options)")


def test_the_cli_starts_without_libraries_only_some_commands_use() -> None:
    """Every command pays at start for what building the parser imports: scipy alone was 0.75 s of
    about 4.5 (``python -X importtime -m mobilenets --help``); runtimes and plotting load on use."""
    script = (
        "import sys; from mobilenets.cli.main import build_parser; build_parser(); "
        "print(*sorted(n for n in ('scipy', 'matplotlib', 'onnxruntime', 'openvino', 'executorch', "
        "'torchao', 'sklearn') if n in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == [], result.stdout


def test_list() -> None:
    result = run_cli("list", "--names-only")
    assert result.returncode == 0
    assert "mobilenet_v2" in result.stdout.split()
    table = run_cli("list", "efficientnet*")
    assert table.returncode == 0 and "4,652,008" in table.stdout


def test_summary_json() -> None:
    result = run_cli("summary", "mobilenet_v2", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["total_params"] == 3_504_872
    assert data["total_macs"] == 300_774_272
    assert data["peak_activation_bytes"] == 6_021_120
    assert len(data["layers"]) == 53


def test_summary_options() -> None:
    result = run_cli(
        "summary",
        "mobilenet_v1",
        "--width-mult",
        "0.5",
        "--resolution",
        "160",
        "--num-classes",
        "10",
        "--format",
        "json",
        "--compare-standard",
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["input_shape"] == [1, 3, 160, 160]
    assert data["layers"][-1]["output_shape"] == [1, 10]
    assert len(data["separable_vs_standard"]) == 13


def test_summary_of_the_small_input_network_defaults_to_32px() -> None:
    from mobilenets import create_model
    from mobilenets.analysis import summarize

    args = ("summary", "mobilenet_v2", "--width-mult", "0.5", "--num-classes", "10", "--format", "json")
    result = run_cli(*args, "--small-input")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["input_shape"] == [1, 3, 32, 32]
    assert data["layers"][0]["output_shape"] == [1, 16, 32, 32]  # the stem keeps full resolution
    model = create_model("mobilenet_v2", width_mult=0.5, num_classes=10, small_input=True)
    assert data["total_macs"] == summarize(model, resolution=32).total_macs
    plain = json.loads(run_cli(*args, "--resolution", "32").stdout)
    assert data["total_macs"] > 5 * plain["total_macs"]
    stem_only = json.loads(run_cli(*args, "--small-input", "1").stdout)
    assert plain["total_macs"] < stem_only["total_macs"] < data["total_macs"]
    assert stem_only["total_macs"] == json.loads(run_cli(*args, "--resolution", "64").stdout)["total_macs"]
    for wrong in (("--small-input", "3"), ("--small-input", "mobilenet_v2")):
        result = run_cli("summary", *wrong, "mobilenet_v2")
        assert result.returncode == 2 and "expected 1 or 2" in result.stderr


def test_output_stride_keeps_a_4x4_map_after_the_stem_stride_is_dropped() -> None:
    args = ("summary", "mobilenet_v2", "--num-classes", "10", "--small-input", "1", "--format", "json")
    plain = json.loads(run_cli(*args).stdout)
    result = run_cli(*args, "--output-stride", "8")
    assert result.returncode == 0, result.stderr
    dilated = json.loads(result.stdout)
    assert plain["layers"][-2]["output_shape"][-2:] == [2, 2]
    assert dilated["layers"][-2]["output_shape"][-2:] == [4, 4]  # conv_head, before pooling
    assert dilated["total_params"] == plain["total_params"]  # strides and dilation change, not weights
    assert plain["total_macs"] < dilated["total_macs"] < 2 * plain["total_macs"]
    undilated = json.loads(run_cli(*args, "--output-stride", "8", "--no-dilate").stdout)
    assert undilated["total_macs"] == dilated["total_macs"]  # dilation moves taps, not mult-adds
    wrong = run_cli("summary", "mobilenet_v2", "--output-stride", "4")
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr
    alone = run_cli("summary", "mobilenet_v2", "--no-dilate")
    assert alone.returncode == 2 and "give --output-stride 8 or 16" in alone.stderr


def test_summary_table_and_csv() -> None:
    table = run_cli("summary", "mobilenet_v3_small", "--compare-standard")
    assert table.returncode == 0, table.stderr
    assert "Peak activation memory" in table.stdout and "1/C_out + 1/K²" in table.stdout
    # Pairs run pointwise first are marked, and the theory column names C, not C_out (64→256: 1/64)
    widening = run_cli("summary", "cifar_separable_dwlast", "--compare-standard").stdout
    row = next(line for line in widening.splitlines() if "64→256" in line)
    assert "blocks.2.0.conv_dw *" in row and f"{1 / 64 + 1 / 9:.4f}" in row and "1/C_out" not in widening
    assert "C: C_out, or C_in for a pair run pointwise first (*)" in widening
    csv = run_cli("summary", "mobilenet_v3_small", "--format", "csv")
    assert csv.returncode == 0
    assert csv.stdout.splitlines()[0].startswith("name,kind")
    assert "Peak activation memory (plain schedule, float32)" in table.stdout
    chunked = run_cli("summary", "mobilenet_v2", "--memory-efficient", "4", "--patches", "2")
    assert "(memory-efficient schedule: 4 channel chunks, 2×2 patches, float32)" in chunked.stdout
    per_channel = run_cli("summary", "mobilenet_v3_small", "--memory-efficient", "channel")
    assert "(memory-efficient schedule: one chunk per channel, float32)" in per_channel.stdout
    for given in (["--compare-standard"], ["--memory-efficient", "4"]):  # no column of the CSV holds them
        refused = run_cli("summary", "mobilenet_v3_small", "--format", "csv", *given)
        assert (
            refused.returncode == 2
            and refused.stdout == ""
            and "use --format json or table" in refused.stderr
        )
    for formats in (["--json", "--format", "csv"], ["--format", "table", "--json"]):  # not: the last wins
        refused = run_cli("summary", "mobilenet_v3_small", *formats)
        assert refused.returncode == 2 and "ask for two formats; give one" in refused.stderr, formats
    same = run_cli("summary", "mobilenet_v3_small", "--json", "--format", "json")
    assert same.returncode == 0 and json.loads(same.stdout)["total_params"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("summary", "mobilenet_v5"), "unknown model 'mobilenet_v5'"),
        (("summary", "mobilenet_v2", "--width-mult", "-1"), "width_mult"),
        (("summary", "mobilenet_v2", "--resolution", "8"), "resolution must be an integer from 32 to 4096"),
        (("summary",), "no model given"),
        (("summary", "mobilenet_v2", "--model", "mobilenet_v1"), "two models given"),
        (("list", "resnet*"), "no model matches"),
    ],
)
def test_bad_input_exits_nonzero_with_message(args: tuple[str, ...], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_summary_takes_the_model_as_the_other_commands_do() -> None:
    """``--model`` (train, eval, bench, convert) and ``--json`` (eval, export, bench) work here too."""
    positional = run_cli("summary", "mobilenet_v3_small", "--format", "json")
    flagged = run_cli("summary", "--model", "mobilenet_v3_small", "--json")
    assert positional.returncode == flagged.returncode == 0, flagged.stderr
    assert json.loads(flagged.stdout) == json.loads(positional.stdout)


def test_train_spells_the_input_size_resolution_and_keeps_img_size() -> None:
    from mobilenets.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "--resolution", "64"]).resolution == 64
    assert parser.parse_args(["train", "--img-size", "64"]).resolution == 64
    assert parser.parse_args(["train"]).resolution is None  # resolved from --data by TrainConfig
    assert parser.parse_args(["train", "--output-stride", "8"]).output_stride == 8
    assert parser.parse_args(["train", "--zero-init-residual"]).zero_init_residual is True
    assert parser.parse_args(["train"]).zero_init_residual is False
    assert parser.parse_args(["train", "--alternate-flip"]).alternate_flip is True
    assert parser.parse_args(["train"]).alternate_flip is False
    assert parser.parse_args(["train", "--eval-every", "4"]).eval_every == 4
    assert parser.parse_args(["train"]).eval_every == 1


def test_train_records_and_resumes_its_crop_cutout_and_activation(tmp_path: Path) -> None:
    import torch

    from mobilenets.layers.activations import ReLU6
    from mobilenets.training import load_trained_model

    common = ["--data", "digits", "--model", "mobilenet_v2", "--width-mult", "0.35", "--batch-size", "128"]
    first = run_cli("train", *common, "--epochs", "1", "--cutout", "6", "--crop-padding", "2",
                    "--padding-mode", "reflect", "--activation", "hardswish", "--no-progress",
                    "--out", str(tmp_path))  # fmt: skip
    assert first.returncode == 0, first.stderr
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["cutout"], saved["crop_padding"], saved["padding_mode"]) == (6, 2, "reflect")
    assert saved["model_options"] == {"activation": "hardswish"}
    resumed = run_cli("train", "--epochs", "2", "--resume", "--no-progress", "--out", str(tmp_path))
    assert resumed.returncode == 0, resumed.stderr
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["cutout"], saved["crop_padding"], saved["padding_mode"]) == (6, 2, "reflect")
    assert saved["model_options"] == {"activation": "hardswish"}
    model = load_trained_model(tmp_path / "last.safetensors").model  # rebuilt from its card
    kinds = {type(module) for module in model.modules()}
    assert torch.nn.Hardswish in kinds and not kinds & {torch.nn.ReLU6, ReLU6}
    other = run_cli("train", "--epochs", "3", "--resume", "--activation", "relu", "--out", str(tmp_path))
    assert other.returncode == 2 and "trained with model_options={'activation': 'hardswish'}" in other.stderr
    refused = run_cli("train", *common, "--cutout", "33", "--out", str(tmp_path / "big"))
    assert refused.returncode == 2 and "cutout 33 px is larger than the 32 px image" in refused.stderr
    unflipped = run_cli("train", *common, "--alternate-flip", "--out", str(tmp_path / "flip"))
    assert unflipped.returncode == 2 and "(digits are not mirror-symmetric)" in unflipped.stderr


def test_train_refuses_a_val_split_its_data_would_ignore(tmp_path: Path) -> None:
    for folder in ("train/a", "test/a"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    result = run_cli("train", "--data", str(tmp_path / "data"), "--val-split", "0.3", "--out", str(tmp_path))
    assert result.returncode == 2 and not (tmp_path / "metrics.jsonl").exists()
    assert f"validation images in {tmp_path / 'data' / 'test'}, so --val-split would change nothing" in (
        result.stderr
    )


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["--optimizer", "adamw", "--momentum", "0.5"], "--momentum would change nothing in this run: AdamW"),
        (["--lr-gamma", "0.5"], "--lr-gamma would change nothing"),
        (["--schedule", "exponential", "--lr-step-epochs", "3"], "--lr-step-epochs would change nothing"),
        (["--progressive-resize-until", "0.2"], "only with --progressive-resize SCALE below 1"),
    ],
)
def test_train_refuses_recipe_options_its_recipe_would_not_use(
    tmp_path: Path, given: list[str], message: str
) -> None:
    result = run_cli("train", "--epochs", "1", "--out", str(tmp_path / "run"), *given)
    assert result.returncode == 2 and message in result.stderr and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_demo_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_cli_process("demo", "--out", str(out), "--repeats", "3", "--no-train")
    assert result.returncode == 0, result.stderr
    report = (out / "report.md").read_text()
    assert "conv_mobilenet_v1" in report and "1/C_out + 1/K²" in report
    assert "29,294,088" in report and "4,231,976" in report
    assert "digits val top-1 |" in report and "not measured in this run (`--no-train`)" in report
    assert not (out / "digits").exists()
    for chart in ("layer_ratios.png", "models.png"):
        assert (out / chart).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_demo_without_the_deploy_extra_skips_its_deployment_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from mobilenets.demo import run as demo

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a)
    )
    section = demo._deployment(tmp_path, steps=5, threads=1, repeats=1)
    assert "Skipped: onnxruntime not installed: pip install 'mobilenets[deploy]'" in section
    assert "[4/5] deploying the trained mobilenet_v2: skipped" in capsys.readouterr().out
    assert not (tmp_path / "deploy").exists()


def test_demo_training_fills_accuracy_column(tmp_path: Path) -> None:
    """The demo's digits runs (here a 1-epoch recipe) land in their folders and in the table."""
    from mobilenets.demo.run import DigitsRecipe, Row, _model_table, train_on_digits

    recipe = DigitsRecipe(width_mult=0.25, epochs=1, batch_size=64, lr=0.05)
    trained = train_on_digits(tmp_path, ("mobilenet_v1",), recipe=recipe, threads=1)
    assert set(trained) == {"mobilenet_v1"} and 0.0 <= trained["mobilenet_v1"].top1 <= 1.0
    assert (tmp_path / "mobilenet_v1" / "metrics.jsonl").is_file()
    again = train_on_digits(tmp_path, ("mobilenet_v1",), recipe=recipe, threads=1)  # re-run replaces
    assert again["mobilenet_v1"].top1 == trained["mobilenet_v1"].top1
    rows = [Row("conv_mobilenet_v1", 1, 1, 1, 1.0), Row("mobilenet_v1", 1, 1, 1, 1.0)]
    table = _model_table(rows, trained)
    assert table.splitlines()[2].endswith("| — |")
    assert table.splitlines()[3].endswith(f"| {100 * trained['mobilenet_v1'].top1:.1f}% |")


@pytest.mark.parametrize("command", ["train", "eval", "bench"])
def test_long_running_commands_reuse_freed_memory_unless_told_not_to(command: str) -> None:
    from mobilenets.cli.common import apply_allocator
    from mobilenets.cli.main import build_parser

    required = {"train": [], "eval": ["--checkpoint", "w.safetensors", "--data", "digits"], "bench": []}
    parser = build_parser()
    opted_out = parser.parse_args([command, *required[command], "--system-malloc"])
    assert apply_allocator(opted_out) == "system malloc (glibc defaults)"
    default = parser.parse_args([command, *required[command]])
    assert default.system_malloc is False
    if sys.platform.startswith("linux"):  # glibc's mallopt
        assert "M_MMAP_THRESHOLD" in apply_allocator(default)


@pytest.mark.slow
def test_demo_ablation_gives_both_v1_rows_their_spread_and_the_difference(tmp_path: Path) -> None:
    """Part 3 of the demo: `ablate separable` on digits (here 1 epoch at width 0.25), into the table."""
    from mobilenets.demo import run as demo

    recipe = demo.DigitsRecipe(width_mult=0.25, epochs=1, batch_size=64, lr=0.05)
    report = demo.separable_ablation(tmp_path / "ablate", recipe=recipe, threads=1)
    trained = demo._ablation_trained(report)
    assert set(trained) == {"mobilenet_v1", "conv_mobilenet_v1"}
    seeds = demo.ABLATION_SEEDS
    assert all(result.seeds == seeds and result.std is not None for result in trained.values())
    rows = [demo.Row("conv_mobilenet_v1", 1, 1, 1, 1.0), demo.Row("mobilenet_v1", 1, 1, 1, 1.0)]
    assert f"({seeds} seeds) |" in demo._model_table(rows, trained).splitlines()[3]
    note = demo._ablation_note(report)
    assert note.startswith("The accuracy side: separable - standard = ") and "docs/ablation.md" in note
    assert (tmp_path / "ablate" / "ablation.png").is_file()
    # Run again, the demo replaces its own ablation; an ablation a user ran into that folder stays.
    assert demo._check_demo_ablation(tmp_path / "ablate", recipe) is None
    for index, (name, content) in enumerate(
        [("notes.txt", "mine"), ("ablation.json", '{"claim": "relu6-int8"}')]
    ):
        folder = tmp_path / f"user{index}"
        folder.mkdir()
        (folder / name).write_text(content)
        with pytest.raises(UsageError, match="holds something the demo did not write"):
            demo.separable_ablation(folder, recipe=recipe, threads=1)
        assert (folder / name).read_text() == content


@pytest.mark.parametrize("command", ["bench", "eval", "demo"])
def test_threads_beyond_the_cpus_or_below_one_are_refused(command: str) -> None:
    """A thread count past the CPUs this process may use only makes threads take turns (ONNX Runtime's
    spin on each other): a typo such as 10000 is refused at once, naming the range."""
    import os

    usable = len(os.sched_getaffinity(0))
    extra = ["--pretrained", "torchvision_mobilenet_v2"] if command == "eval" else []
    for wrong in ("0", str(usable + 1), "10000", "two"):
        code, _, err = run_cli_argv([command, *extra, "--threads", wrong])
        assert code == 2 and "argument --threads" in err, (wrong, err)
        assert (f"give 1 to {usable}" in err) if wrong != "two" else ("not a whole number" in err), err


@pytest.mark.parametrize("command", [("summary", "mobilenet_v3_small"), ("list",)])
def test_a_reader_that_stops_early_ends_the_command_with_status_0(command: tuple[str, ...]) -> None:
    """`mobilenets summary ... | head -1`: rich's tables met the closed pipe with SystemExit(1), which
    fails scripts under `set -o pipefail`; the CLI ends a closed pipe with 0, as for its plain prints."""
    import os

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: every write meets a closed pipe
    try:
        done = subprocess.run(
            [sys.executable, "-m", "mobilenets", *command], stdout=write, stderr=subprocess.PIPE, text=True,
            timeout=300, check=False,
        )  # fmt: skip
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (0, "")
