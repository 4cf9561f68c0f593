"""Kill a training run again and again at random points, resume it each time, and account for it all.

Each round starts ``mobilenets train --resume`` under :mod:`.faults` with a SIGKILL planted at a random
event (forward, backward, optimizer step, a checkpoint or log write, a rename) or sent from outside
after a random delay; some rounds instead fail one write with "No space left on device", which must
end the run with a one-line error. After every round the run directory is inspected: each checkpoint
file must load (safetensors header and tensors; training state through ``weights_only=True``) and the
completed epochs must not go backwards. At the end the run is resumed to completion and its weights
compared with an uninterrupted run of the same deterministic recipe.
``benchmarks/fault_injection.py`` prints the table.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..training.checkpoint import checkpoint_paths, load_training_state
from .faults import EVENTS, FILE_FSYNC

# SIGKILL sent by this process after a random delay, besides the events of .faults.
EXTERNAL = "external"
# A write failing with "No space left on device" at a random fsync: the run must stop with a clear
# message (exit status 1, or 2 when the pre-flight write test hits it) and resume later.
DISK_FULL = "disk_full"
PHASES = (*EVENTS, EXTERNAL, DISK_FULL)
# The campaign's default training: tiny and deterministic, 3 epochs of 12 steps; a process lives ~5 s.
RECIPE = (
    "--model", "mobilenet_v1", "--width-mult", "0.25", "--data", "digits", "--epochs", "3",
    "--batch-size", "128", "--resolution", "32",
)  # fmt: skip
# Plant faults within this fraction of the events left, so nearly every round is killed before its end.
REACH = 0.85


@dataclass
class Round:
    """One process started on the run: the fault planted and what was found afterwards."""

    fault: str
    killed: bool
    epochs_before: int
    epochs_after: int
    checkpoints_intact: bool
    problem: str = ""
    clear_error: bool = True  # a disk-full round ended with a one-line message, not a traceback
    fired: bool = True  # False when the fault lay past the end of the run (it then completed)

    @property
    def lost_epochs(self) -> int:
        """Completed epochs that disappeared (must be 0: a kill loses only the epoch in progress)."""
        return max(self.epochs_before - self.epochs_after, 0)


@dataclass
class CampaignReport:
    rounds: list[Round] = field(default_factory=list)
    # Runs resumed to completion, and the problems found comparing each with the reference run.
    finished: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return sum(r.killed for r in self.rounds)

    @staticmethod
    def phase_of(round_: Round) -> str:
        return DISK_FULL if round_.fault.startswith("enospc") else round_.fault.split(":")[1]

    def table(self) -> list[dict[str, object]]:
        """Per phase: faults injected, survived (checkpoints intact, nothing lost), epochs lost."""
        rows = []
        for phase in PHASES:
            rounds = [r for r in self.rounds if r.fired and self.phase_of(r) == phase]
            survived = [r for r in rounds if r.checkpoints_intact and r.lost_epochs == 0 and r.clear_error]
            rows.append(
                {
                    "phase": phase,
                    "injected": len(rounds),
                    "survived": len(survived),
                    "epochs_lost": sum(r.lost_epochs for r in rounds),
                }
            )
        return rows


def _completed_epochs(out: Path) -> int:
    _, state_path = checkpoint_paths(out, "last")
    return int(load_training_state(out, "last")["epoch"]) if state_path.is_file() else 0


def check_run_directory(out: Path) -> str:
    """'' when every checkpoint file in ``out`` loads completely, else what is wrong."""
    for name in ("last", "best"):
        weights_path, state_path = checkpoint_paths(out, name)
        try:
            if weights_path.exists():
                load_file(weights_path)
            if state_path.exists():
                load_training_state(out, name)
        except Exception as err:
            return f"{name}: {type(err).__name__}: {err}"
    return ""


def compare_with_reference(out: Path, reference: Path, epochs: int) -> list[str]:
    """What differs between the finished run ``out`` and the uninterrupted ``reference`` (nothing: [])."""
    problems = []
    first, second = load_file(reference / "last.safetensors"), load_file(out / "last.safetensors")
    if first.keys() != second.keys() or not all(torch.equal(first[k], second[k]) for k in first):
        problems.append(f"{out}: final weights differ from the uninterrupted run's")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    logged = [json.loads(line)["epoch"] for line in lines]
    if logged != list(range(1, epochs + 1)):
        problems.append(f"{out}: metrics.jsonl logs epochs {logged}, expected 1..{epochs} once each")
    leftovers = sorted(path.name for path in out.glob("*.tmp")) + sorted(p.name for p in out.glob(".*.tmp"))
    if leftovers:
        problems.append(f"{out}: temp files left behind: {leftovers}")
    return problems


def _command(fault: str | None, train_args: Sequence[str], out: Path, count: Path | None = None) -> list[str]:
    command = [sys.executable, "-m", "mobilenets.testing.faults"]
    if fault is not None:
        command += ["--fault", fault]
    if count is not None:
        command += ["--count", str(count)]
    return [*command, "--", "train", *train_args, "--no-progress", "--resume", "--out", str(out)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def _run(command: list[str], timeout: float, kill_after: float | None = None) -> tuple[int, str]:
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()
    )
    if kill_after is not None:
        try:
            output, _ = process.communicate(timeout=kill_after)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate(timeout=timeout)
        return process.returncode, output
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


@dataclass(frozen=True)
class Reference:
    """An uninterrupted deterministic run: its directory, wall time and event counts (see .faults)."""

    train_args: tuple[str, ...]
    out: Path
    seconds: float
    counts: dict[str, int]

    @property
    def epochs(self) -> int:
        return int(self.train_args[self.train_args.index("--epochs") + 1])


def reference_run(train_args: Sequence[str], out: Path, timeout: float = 600.0) -> Reference:
    """Train ``train_args`` (``--deterministic`` added) into ``out`` without faults, counting events."""
    args = (*train_args, *(() if "--deterministic" in train_args else ("--deterministic",)))
    if "--epochs" not in args:
        raise ValueError("the campaign's training arguments must give --epochs")
    counts_path = out.with_name(out.name + "-counts.json")
    started = time.perf_counter()
    code, output = _run(_command(None, args, out, counts_path), timeout)
    if code != 0:
        raise RuntimeError(f"the reference run failed ({code}):\n{output[-3000:]}")
    seconds = time.perf_counter() - started
    return Reference(args, out, seconds, json.loads(counts_path.read_text()))


def run_campaign(
    reference: Reference,
    workdir: Path,
    *,
    kills: int = 20,
    seed: int = 0,
    parallel: int = 1,
    timeout: float = 600.0,
) -> CampaignReport:
    """Kill runs of the ``reference`` recipe ``kills`` times, resuming each time; see the module doc.

    ``parallel`` independent sequences of runs share the kills (one process each at a time; use as
    many as there are cores). Within one, phases take turns in a shuffled order, so every phase is
    hit. A round whose fault lies past the end of the run finishes it; that run is compared with the
    reference and a new one begins.
    """
    shares = [kills // parallel + (i < kills % parallel) for i in range(parallel)]
    with ThreadPoolExecutor(parallel) as pool:
        parts = list(
            pool.map(
                lambda i: _kill_sequence(reference, workdir / f"seq{i}", shares[i], seed + i, timeout),
                range(parallel),
            )
        )
    return CampaignReport(
        rounds=[r for part in parts for r in part.rounds],
        finished=[f for part in parts for f in part.finished],
        problems=[p for part in parts for p in part.problems],
    )


def _kill_sequence(
    reference: Reference, workdir: Path, kills: int, seed: int, timeout: float
) -> CampaignReport:
    args, epochs = list(reference.train_args), reference.epochs
    rng = random.Random(seed)
    report = CampaignReport()
    runs = 0
    out = workdir / f"run{runs}"
    turns: list[str] = []

    def finished(out: Path) -> None:
        report.finished.append(str(out))
        report.problems.extend(compare_with_reference(out, reference.out, epochs))

    while report.kills < kills:
        before = _completed_epochs(out)
        left = (epochs - before) / epochs
        if not turns:
            turns = rng.sample(PHASES, len(PHASES))
        phase = turns.pop()
        kill_after = None
        if phase == DISK_FULL:
            n = rng.randint(1, max(1, int(REACH * reference.counts.get(FILE_FSYNC, 1) * left)))
            fault = f"enospc:fsync:{n}"
            command = _command(fault, args, out)
        elif phase == EXTERNAL:
            kill_after = rng.uniform(0.1, REACH * reference.seconds * max(left, 0.2))
            fault = f"kill:{EXTERNAL}:{kill_after:.2f}s"
            command = _command(None, args, out)
        else:
            n = rng.randint(1, max(1, int(REACH * reference.counts.get(phase, 1) * left)))
            fault = f"kill:{phase}:{n}"
            command = _command(fault, args, out)
        code, output = _run(command, timeout, kill_after)
        killed, disk_full = code == -9, "No space left on device" in output
        clear = not disk_full or (code in (1, 2) and "Traceback" not in output)
        if not killed and code != 0 and not disk_full:
            raise RuntimeError(f"round {fault} on {out} failed ({code}):\n{output[-3000:]}")
        problem = check_run_directory(out)
        after = _completed_epochs(out) if not problem else -1
        report.rounds.append(
            Round(fault, killed, before, after, not problem, problem, clear, killed or disk_full)
        )
        if code == 0:  # the fault lay beyond the end (or was a directory sync): this run is complete
            finished(out)
            runs += 1
            out = workdir / f"run{runs}"
    code, output = _run(_command(None, args, out), timeout)
    if code != 0:
        raise RuntimeError(f"the final resume of {out} failed ({code}):\n{output[-3000:]}")
    finished(out)
    return report
