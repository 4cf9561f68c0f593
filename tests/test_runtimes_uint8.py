"""The uint8-input OpenVINO cases (``tests/runtimes_uint8_cases.py``), run in a pytest process of their own.

In the suite's main process, with these cases run in it, that process died (SIGSEGV, si_code SI_KERNEL:
the kernel's, not a fault of the code it stopped in) at the first subprocess it waited on after them:
in test_paired's first pair while they ran before it, in test_training's first CLI run once they ran
after test_paired; each time at the same test, in three runs in a row. Run alone, or with only those
tests after them, they pass. The cause was not found (notes of stops 61 and 62); their in-process
OpenVINO and NNCF work is the part that changed, so it runs in a process that ends with them.
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT

CASES = REPO_ROOT / "tests" / "runtimes_uint8_cases.py"


def test_uint8_input_cases_pass_in_a_process_of_their_own() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CASES)],
        capture_output=True, text=True, timeout=1800, cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    report = result.stdout[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    assert "4 passed" in result.stdout and "failed" not in result.stdout, report
