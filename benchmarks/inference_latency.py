"""`mobilenets bench` at batch 1 (latency) and 32 (throughput), 224×224, 2 threads.

Runs the eight variants (torchvision eager/compile/ONNX Runtime fp32/int8; ours eager/optimize/ONNX
Runtime fp32/int8) interleaved in one process per setting, and batch 32 once more with glibc's default
allocator, to show what page faults cost eager PyTorch. Batch 1 and 32 also measure each variant's
peak resident memory alone in a fresh process (``--peak-rss``). Writes ``runs/bench/inference/*.json``.

    python benchmarks/inference_latency.py        # ~15 minutes on 2 cores
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

OUT = Path("runs/bench/inference")
SETTINGS = {
    "batch1": ["--batch", "1", "--peak-rss"],
    "batch32": ["--batch", "32", "--peak-rss"],
    "batch32_system_malloc": ["--batch", "32", "--system-malloc"],
}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, options in SETTINGS.items():
        command = [sys.executable, "-m", "mobilenets", "bench", "--threads", "2", "--repeats", "30", "--json"]
        done = subprocess.run([*command, *options], check=True, capture_output=True, text=True)
        report = json.loads(done.stdout)
        (OUT / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"## {name} ({report['allocator']})")
        print("| variant | median ms | ms/image | speed-up vs torchvision eager | peak RSS MB |")
        print("|---|---:|---:|---:|---:|")
        for variant, row in report.items():
            if isinstance(row, dict) and "median_ms" in row:
                speedup = row["speedup_vs_torchvision_eager"]
                peak = row.get("peak_rss_mb")
                print(
                    f"| {variant} | {row['median_ms']:.2f} | {row['per_image_ms']:.2f} "
                    f"| {'n/a' if speedup is None else f'{speedup:.2f}×'} "
                    f"| {'—' if peak is None else f'{peak:.0f}'} |"
                )
        print(flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
