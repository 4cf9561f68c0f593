"""Our models against torchvision's, side by side in one run: batch-1 latency at 224×224.

Both sides load the same weights (through the torchvision key map), run in eval mode with the same
threads, and are timed interleaved; we report medians and the ratio ours / torchvision for NCHW and
channels_last. Usage: python benchmarks/model_latency.py [--threads 2] [--repeats 30] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json

import torch
import torchvision

import mobilenets
from mobilenets.bench import measure_interleaved
from mobilenets.weights import torchvision_key_map

MODELS = ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    results = {}
    for name in MODELS:
        reference = getattr(torchvision.models, name)(weights=None).eval()
        ours = mobilenets.create_model(name).eval()
        key_map = torchvision_key_map(ours)
        ours.load_state_dict({key_map[k]: v for k, v in reference.state_dict().items()})
        x = torch.randn(1, 3, 224, 224)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        ref_cl = getattr(torchvision.models, name)(weights=None).eval().to(memory_format=torch.channels_last)
        ref_cl.load_state_dict(reference.state_dict())
        ours_cl = mobilenets.create_model(name).eval().to(memory_format=torch.channels_last)
        ours_cl.load_state_dict(ours.state_dict())
        timings = measure_interleaved(
            {
                "torchvision_nchw": functools.partial(reference, x),
                "ours_nchw": functools.partial(ours, x),
                "torchvision_channels_last": functools.partial(ref_cl, x_cl),
                "ours_channels_last": functools.partial(ours_cl, x_cl),
            },
            repeats=args.repeats,
            threads=args.threads,
        )
        medians = {variant: result.median_ms for variant, result in timings.items()}
        medians["ratio_nchw"] = medians["ours_nchw"] / medians["torchvision_nchw"]
        medians["ratio_channels_last"] = medians["ours_channels_last"] / medians["torchvision_channels_last"]
        results[name] = medians

    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"batch 1, 224×224, {args.threads} threads, median of {args.repeats} interleaved runs (ms)")
    print(
        f"{'model':20} {'tv NCHW':>9} {'ours NCHW':>10} {'ratio':>6} {'tv CL':>8} {'ours CL':>8} {'ratio':>6}"
    )
    for name, m in results.items():
        print(
            f"{name:20} {m['torchvision_nchw']:9.2f} {m['ours_nchw']:10.2f} {m['ratio_nchw']:6.3f} "
            f"{m['torchvision_channels_last']:8.2f} {m['ours_channels_last']:8.2f} "
            f"{m['ratio_channels_last']:6.3f}"
        )


if __name__ == "__main__":
    main()
