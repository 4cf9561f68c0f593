"""The seed's claims about accuracy, each as arms of one builder that differ in one option only.

A claim names the model it is measured on, its arms (builder options; the first arm is the paper's
choice) and what is compared: validation top-1 after the same training, or the top-1 lost by int8
post-training quantization. The paper's expectation is that the first arm wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import UsageError

Metric = Literal["top1", "int8_drop"]


@dataclass(frozen=True)
class Arm:
    """One variant: a name and the builder options that make it (empty: the model as published)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    """A claim of the papers, as an experiment: arms trained alike, one metric compared."""

    name: str
    statement: str
    source: str
    model: str
    arms: tuple[Arm, ...]
    expectation: str
    metric: Metric = "top1"

    @property
    def reference(self) -> Arm:
        """The paper's choice, which the claim says is at least as good as every other arm."""
        return self.arms[0]

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "top1"


CLAIMS: dict[str, Claim] = {
    claim.name: claim
    for claim in (
        Claim(
            "separable",
            "depthwise separable convolutions cost 8-9x less than standard ones with only a minor drop in "
            "accuracy",
            "MobileNet v1, Table 4: 70.6% vs 71.7% on ImageNet",
            "mobilenet_v1",
            (Arm("separable"), Arm("standard", {"separable": False})),
            "separable within about a point of standard (ImageNet: -1.1)",
        ),
        Claim(
            "linear-bottleneck",
            "a linear projection keeps information a ReLU6 on the narrow bottleneck destroys",
            "MobileNet v2, Figure 6a",
            "mobilenet_v2",
            (Arm("linear"), Arm("relu6-bottleneck", {"projection_activation": "relu6"})),
            "linear better",
        ),
        Claim(
            "inverted-residual",
            "shortcuts between the thin bottlenecks work better than between the expanded layers, or none",
            "MobileNet v2, Figure 6b",
            "mobilenet_v2",
            (
                Arm("bottleneck-shortcut"),
                Arm("expansion-shortcut", {"shortcut": "expansion"}),
                Arm("no-shortcut", {"shortcut": "none"}),
            ),
            "bottleneck-shortcut better than each other arm",
        ),
        Claim(
            "relu6-int8",
            "ReLU6's bounded range is robust in low precision: int8 costs a ReLU6 network less than ReLU",
            "MobileNet v1 §3.1 / v2 §3.1",
            "mobilenet_v2",
            (Arm("relu6"), Arm("relu", {"activation": "relu"})),
            "relu6 loses less to int8",
            metric="int8_drop",
        ),
    )
}


def get_claim(name: str) -> Claim:
    """The claim ``name``; ``UsageError`` listing the claims otherwise."""
    if name not in CLAIMS:
        raise UsageError(f"unknown claim {name!r}; expected one of {', '.join(CLAIMS)}")
    return CLAIMS[name]
