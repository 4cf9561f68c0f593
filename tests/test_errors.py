"""The CLI's error boundary: user mistakes exit 2, failures outside our code exit 1, bugs keep tracebacks."""

from __future__ import annotations

import argparse
import errno
from pathlib import Path

import pytest

from mobilenets.atomic import unwritable_reason
from mobilenets.errors import ExternalError, MissingFileError, UsageError, WrongTypeError, external_step

from .conftest import run_cli, unwritable_folder


def _run_with(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> tuple[int, str, str]:
    """``mobilenets list`` whose command body raises ``error``."""

    def fail(args: argparse.Namespace) -> int:
        raise error

    import mobilenets.cli.models as models_command

    monkeypatch.setattr(models_command, "run", fail)
    return run_cli(["list"])


def test_usage_errors_are_value_errors_and_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    assert issubclass(UsageError, ValueError)
    assert issubclass(WrongTypeError, TypeError) and issubclass(MissingFileError, FileNotFoundError)
    code, _, err = _run_with(monkeypatch, UsageError("width_mult must be positive, got -1"))
    assert code == 2 and err.strip() == "mobilenets list: error: width_mult must be positive, got -1"


def test_external_failures_exit_1_with_what_failed_and_what_to_try(monkeypatch: pytest.MonkeyPatch) -> None:
    step = external_step("ONNX Runtime loading 'm.onnx'", "re-export it")
    with pytest.raises(ExternalError) as caught, step:
        raise RuntimeError("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF\nsecond line")
    message = str(caught.value)
    assert message.startswith("ONNX Runtime loading 'm.onnx' failed (RuntimeError: [ONNXRuntimeError]")
    assert message.endswith("re-export it") and "second line" not in message
    assert isinstance(caught.value.__cause__, RuntimeError)
    code, _, err = _run_with(monkeypatch, caught.value)
    assert code == 1 and "INVALID_PROTOBUF" in err and "Traceback" not in err


def test_external_step_lets_our_own_errors_through() -> None:
    with pytest.raises(UsageError, match="bad value"), external_step("a step", "a hint"):
        raise UsageError("bad value")


def test_file_system_errors_exit_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "m.onnx"))
    code, _, err = _run_with(monkeypatch, full)
    assert code == 1 and "No space left on device" in err and "m.onnx" in err


@pytest.mark.parametrize("bug", [KeyError("blocks.3"), TypeError("unsupported operand"), ValueError("oops")])
def test_bugs_keep_their_traceback(monkeypatch: pytest.MonkeyPatch, bug: Exception) -> None:
    """A plain ValueError or TypeError is a bug in mobilenets, not the user's mistake: it propagates."""
    with pytest.raises(type(bug)):
        _run_with(monkeypatch, bug)


def test_a_missing_weights_file_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = run_cli(["eval", "--weights", str(tmp_path / "none.safetensors"), "--data", "digits"])
    assert code == 2 and "does not exist" in err


def test_a_file_that_is_not_onnx_says_so(tmp_path: Path) -> None:
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"not a protobuf at all \xff\xfe")
    code, _, err = run_cli(["eval", "--onnx", str(fake), "--data", "digits"])
    assert code == 2 and "not a readable ONNX file" in err, err


def test_unwritable_reason_names_what_stands_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    assert unwritable_reason(tmp_path / "new" / "deeper" / "m.onnx") is None  # created later, by the write
    assert unwritable_reason(tmp_path, folder=True) is None
    assert not list(tmp_path.glob(".write-test.*"))  # the probe is removed
    for out, folder in ((tmp_path / "file" / "m.onnx", False), (tmp_path / "file", True)):
        assert unwritable_reason(out, folder=folder) == f"{str(tmp_path / 'file')!r} is a file, not a folder"
    locked = unwritable_folder(tmp_path)
    assert f"no file can be created in {str(locked)!r}" in str(unwritable_reason(locked / "m.onnx"))
    assert unwritable_reason(tmp_path) == f"{str(tmp_path)!r} is a folder, not a file"
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")  # exists() follows links: named, not skipped
    for out, folder in ((tmp_path / "gone" / "m.onnx", False), (tmp_path / "gone", True)):
        assert unwritable_reason(out, folder=folder) == f"{str(tmp_path / 'gone')!r} is a link to nothing"


@pytest.mark.parametrize("command", ["export", "convert", "demo", "eval"])
def test_an_out_that_cannot_be_written_is_refused_before_the_work(tmp_path: Path, command: str) -> None:
    """Found before exporting, converting, measuring or evaluating, not by the final write (an export
    can take minutes), and a mistake to fix (exit 2) as in `train`."""
    (tmp_path / "file").write_text("not a folder")
    locked = unwritable_folder(tmp_path)
    argv = {
        "export": ["export", "mobilenet_v2", "--format", "onnx", "--out", str(locked / "m.onnx")],
        "convert": ["convert", str(tmp_path / "file"), "--model", "mobilenet_v2", "--out"],
        "demo": ["demo", "--no-train", "--repeats", "1", "--out", str(locked / "demo")],
        "eval": ["eval", "--weights", str(tmp_path / "file"), "--data", "digits"],
    }[command]
    if command == "convert":
        argv.append(str(locked / "m.safetensors"))
    if command == "eval":  # the plot asked for
        argv += ["--confusion", str(locked / "confusion.png")]
    code, stdout, err = run_cli(argv)
    assert code == 2 and f"no file can be created in {str(locked)!r}" in err and ".tmp" not in err, err
    assert stdout == "" and "[1/" not in err
