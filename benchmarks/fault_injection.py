"""Fault-injection campaign: kill (and fill the disk under) a training run many times; print the table.

Each round resumes the run under ``mobilenets.testing.faults`` with one fault at a random point — SIGKILL
during forward, backward, an optimizer step, a checkpoint/log fsync (the file torn first), a rename,
or from outside after a random delay; or "No space left on device" at a random write. After each
round every checkpoint must load and no completed epoch may be lost; every run is finally resumed to
completion and must end on the bit-identical weights of an uninterrupted deterministic run.

    python benchmarks/fault_injection.py [--kills 40] [--parallel 2] [--json FILE] [--markdown [PAGE]]

``--markdown`` also writes the table into ``docs/reliability.md`` (between the ``fault-injection`` markers).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _report import add_markdown_argument, provenance, table, write_fragments
from mobilenets.testing.campaign import RECIPE, reference_run, run_campaign


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=40, help="SIGKILLs to inject (disk-full rounds extra)")
    parser.add_argument("--parallel", type=int, default=2, help="independent run sequences at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    add_markdown_argument(parser, "reliability.md")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mobilenets-faults-") as tmp:
        reference = reference_run(RECIPE, Path(tmp) / "reference")
        report = run_campaign(reference, Path(tmp), kills=args.kills, seed=args.seed, parallel=args.parallel)
    rows = report.table()
    total = {key: sum(int(row[key]) for row in rows) for key in ("injected", "survived", "epochs_lost")}
    cells = [[row["phase"], row["injected"], row["survived"], row["epochs_lost"]] for row in rows]
    cells.append(["**all**", *(f"**{total[key]}**" for key in ("injected", "survived", "epochs_lost"))])
    equal = len(report.finished) - len({p.split(":")[0] for p in report.problems if "weights differ" in p})
    text = (
        f"{len(report.rounds)} rounds ({report.kills} SIGKILLs) on `mobilenets train {' '.join(RECIPE)} "
        f"--deterministic`, each resuming the run with one fault at a random point.\n\n"
        f"{table(['fault', 'injected', 'survived', 'epochs lost'], cells)}\n\n"
        f"Runs resumed to the end on weights bit-identical to the uninterrupted run's: "
        f"{equal}/{len(report.finished)}. Problems: {'; '.join(report.problems) or 'none'}."
    )
    print(text)
    seconds = time.perf_counter() - started
    print(f"wall time: {seconds:.0f} s")
    write_fragments(args.markdown, {"fault-injection": provenance(seconds) + "\n\n" + text})
    if args.json is not None:
        rounds = [vars(r) for r in report.rounds]
        args.json.write_text(
            json.dumps({"table": rows, "rounds": rounds, "problems": report.problems}, indent=2)
        )


if __name__ == "__main__":
    main()
