"""Pretrained ImageNet weights from other projects, converted and evaluated on real photos.

For each packaged set of weights (see ``mobilenets.weights.packaged``): ``mobilenets convert`` to
safetensors, then ``mobilenets eval --json`` on the 1,300 ILSVRC2012 validation photos in
``$MOBILENETS_SHARED/data/imagenet-val-1300``. A third row evaluates EfficientNet-Lite0 with symmetric
padding instead of TensorFlow's SAME, to show what exact padding is worth. Writes
``runs/bench/pretrained/result.json`` and prints a Markdown table; ``--markdown`` also writes it into
``docs/weights.md`` (between the ``pretrained-accuracy`` markers).

    python benchmarks/pretrained_accuracy.py [--markdown [PAGE]]   # ~2-3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _report import add_markdown_argument, provenance, table, write_fragments
from mobilenets.weights import packaged_weights

SHARED = Path(os.environ.get("MOBILENETS_SHARED", Path(__file__).resolve().parents[2] / "shared"))
PHOTOS = SHARED / "data" / "imagenet-val-1300" / "dataset.txt"
OUT = Path("runs/bench/pretrained")

# (row name, packaged weights, extra convert options)
ROWS = (
    ("torchvision mobilenet_v2", "torchvision_mobilenet_v2", []),
    ("efficientnet_lite0 (tf_same)", "efficientnet_lite0", []),
    ("efficientnet_lite0 (symmetric padding)", "efficientnet_lite0", ["--padding", "symmetric"]),
)


def _cli(*args: str) -> str:
    command = [sys.executable, "-m", "mobilenets", *args]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_markdown_argument(parser, "weights.md")
    args = parser.parse_args()
    if not PHOTOS.is_file():
        print(f"ImageNet photos not found at {PHOTOS} (set MOBILENETS_SHARED)", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = []
    for name, key, options in ROWS:
        entry = packaged_weights(key)
        converted = OUT / f"{key}{'_symmetric' if options else ''}.safetensors"
        _cli("convert", str(entry.path()), "--model", entry.model, "--out", str(converted), *options)
        start = time.perf_counter()
        report = json.loads(
            _cli("eval", "--checkpoint", str(converted), "--data", str(PHOTOS), "--json", "--workers", "2")
        )
        seconds = time.perf_counter() - start
        results.append(
            {
                "name": name,
                "weights": entry.pip_name,
                "top1": report["top1"],
                "top5": report["top5"],
                "num_images": report["num_images"],
                "eval_seconds": round(seconds, 1),
                "command": f"mobilenets convert ... --model {entry.model} {' '.join(options)}".strip()
                + f" && mobilenets eval --checkpoint {converted} --data {PHOTOS} --json",
            }
        )
        print(json.dumps(results[-1]), flush=True)
    (OUT / "result.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = [
        [row["name"], f"{100 * row['top1']:.2f}%", f"{100 * row['top5']:.2f}%", row["num_images"],
         row["eval_seconds"]]
        for row in results
    ]  # fmt: skip
    text = table(["weights", "top-1", "top-5", "images", "eval s"], rows)
    tf_same, symmetric = results[1]["top1"], results[2]["top1"]
    text += (
        f"\n\nTensorFlow's SAME padding is worth {100 * (tf_same - symmetric):.2f} points of top-1 to "
        "the EfficientNet-Lite0 weights, which were trained with it."
    )
    print("\n" + text)
    took = time.perf_counter() - started
    write_fragments(args.markdown, {"pretrained-accuracy": provenance(took) + "\n\n" + text})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
