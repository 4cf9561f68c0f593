"""Every entry of the pretrained registry, evaluated on real photos, beside the original code where it exists.

For each entry of ``mobilenets.weights.PRETRAINED``: ``mobilenets eval --pretrained NAME --json`` on the
1,300 ILSVRC2012 validation photos in ``$MOBILENETS_SHARED/data/imagenet-val-1300`` (each in its own
process), its parameters and mult-adds at its resolution. For the EfficientNet-Lite entries, the
original port (``efficientnet-lite-pytorch``, whose layout the weights come in) is evaluated on the same
photos with the same preprocessing: ours should agree within 0.3 points. One more row evaluates
Lite0 with symmetric padding, to show what TensorFlow's SAME padding is worth.

Writes ``runs/bench/pretrained/result.json`` and a Markdown table; ``--markdown`` writes it into
``docs/weights.md`` (``pretrained-accuracy`` markers); ``--record`` writes the measured accuracy, params
and mult-adds into the registry's ``src/mobilenets/weights/measured.json``.

    python benchmarks/pretrained_accuracy.py [--markdown [PAGE]] [--record]   # ~10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _report import add_markdown_argument, command_line, provenance, record_measured, table, write_fragments
from _shared import PHOTOS, photos_found

OUT = Path("runs/bench/pretrained")
AGREEMENT_GOAL = 0.3  # points of top-1 between ours and the original code


def _cli(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "mobilenets", *args], check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def symmetric_source(name: str) -> list[str]:
    """``eval`` options for the packaged file of ``name`` built with symmetric padding.

    Packaged weights refuse another build (``--pretrained`` with ``--padding``), so the row reads the
    same file as a foreign one; its card, hence the preprocessing, is the entry's (same resize, crop,
    interpolation and normalization)."""
    from mobilenets.weights import get_pretrained

    entry = get_pretrained(name)
    return ["--weights", str(entry.verified_path()), "--model", entry.model, "--padding", "symmetric"]


def _eval(*source: str) -> dict[str, Any]:
    """``mobilenets eval SOURCE --json`` on the photos; SOURCE names the weights (e.g. --pretrained NAME)."""
    start = time.perf_counter()
    report = _cli(
        "eval", *source, "--data", str(PHOTOS), "--json", "--workers", "2", "--no-confusion"
    )  # fmt: skip
    return {
        "top1": report["top1"],
        "top5": report["top5"],
        "num_images": report["num_images"],
        "eval_seconds": round(time.perf_counter() - start, 1),
    }


def original(name: str) -> dict[str, Any]:
    """Top-1/top-5 of the original EfficientNet-Lite port with the entry's file and preprocessing."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    import mobilenets
    from mobilenets.data.card import card_eval_set
    from mobilenets.data.splits import build_loader
    from mobilenets.evaluation.evaluate import evaluate
    from mobilenets.weights import get_pretrained

    entry = get_pretrained(name)
    index = entry.model[-1]
    theirs = EfficientNet.from_pretrained(
        f"efficientnet-lite{index}", weights_path=str(entry.verified_path())
    )
    theirs.eval()
    card = mobilenets.create_model(name, pretrained=True).card  # the same preprocessing as ours
    dataset, _ = card_eval_set(card, str(PHOTOS))
    loader = build_loader(dataset, batch_size=64, train=False, seed=0, workers=2)
    start = time.perf_counter()
    with torch.no_grad():
        metrics = evaluate(theirs, loader, device="cpu", channels_last=False)
    return {
        "top1": metrics.top1,
        "top5": metrics.top5,
        "num_images": metrics.num_images,
        "eval_seconds": round(time.perf_counter() - start, 1),
    }


def costs(name: str) -> dict[str, int]:
    import mobilenets
    from mobilenets.analysis import summarize
    from mobilenets.weights import get_pretrained

    entry = get_pretrained(name)
    summary = summarize(mobilenets.create_model(name, pretrained=True), resolution=entry.resolution)
    return {"params": summary.total_params, "mult_adds": summary.total_macs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_markdown_argument(parser, "weights.md")
    parser.add_argument("--record", action="store_true", help="write the results into measured.json")
    parser.add_argument("--original", help=argparse.SUPPRESS)  # internal: one original-code run, as JSON
    args = parser.parse_args()
    if not photos_found():
        return 1
    if args.original:
        print(json.dumps(original(args.original)))
        return 0
    from mobilenets.weights import PRETRAINED

    OUT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    recorded: dict[str, dict[str, Any]] = {}
    for name, entry in PRETRAINED.items():
        ours = {"name": name, "code": "mobilenets", **_eval("--pretrained", name), **costs(name)}
        results.append(ours)
        print(json.dumps(ours), flush=True)
        fields = {key: ours[key] for key in ("top1", "top5", "num_images", "params", "mult_adds")}
        if entry.source == "efficientnet_lite":
            done = subprocess.run(
                [sys.executable, __file__, "--original", name], check=True, capture_output=True, text=True
            )
            theirs = {
                "name": name,
                "code": "efficientnet-lite-pytorch",
                **json.loads(done.stdout.splitlines()[-1]),
            }
            results.append(theirs)
            print(json.dumps(theirs), flush=True)
            fields["original_top1"] = theirs["top1"]
        recorded[name] = {**fields, "by": command_line()}
    symmetric = {"name": "efficientnet_lite0.tf_in1k", "code": "mobilenets, symmetric padding"}
    symmetric.update(_eval(*symmetric_source("efficientnet_lite0.tf_in1k")))
    results.append(symmetric)
    (OUT / "result.json").write_text(json.dumps(results, indent=2) + "\n")
    if args.record:
        record_measured(recorded)
    rows = [
        [row["name"], row["code"], f"{100 * row['top1']:.2f}%", f"{100 * row['top5']:.2f}%",
         f"{PRETRAINED[row['name']].published_top1:.1f}%", row["num_images"], row["eval_seconds"]]
        for row in results
    ]  # fmt: skip
    text = table(["weights", "code", "top-1", "top-5", "published", "images", "eval s"], rows, "llrrrrr")
    gaps = [
        abs(row["top1"] - theirs["top1"]) * 100
        for row, theirs in itertools.pairwise(results)
        if theirs["code"] == "efficientnet-lite-pytorch" and row["code"] == "mobilenets"
    ]
    lite0 = next(
        row for row in results if row["name"].startswith("efficientnet_lite0") and row["code"] == "mobilenets"
    )
    text += (
        f"\n\nOurs against the original code on the same photos and preprocessing: at most "
        f"{max(gaps):.2f} points apart (goal {AGREEMENT_GOAL}). TensorFlow's SAME padding is worth "
        f"{100 * (lite0['top1'] - symmetric['top1']):.2f} points to the Lite0 weights, which were trained "
        "with it. The shared photos are easier than the full validation set: compare rows, not with the "
        "published column."
    )
    print("\n" + text)
    took = time.perf_counter() - started
    write_fragments(args.markdown, {"pretrained-accuracy": provenance(took) + "\n\n" + text})
    return 0 if max(gaps) <= AGREEMENT_GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
