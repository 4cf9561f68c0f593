"""Ablations: the seed's accuracy claims measured by training arms that differ in one option."""

from .claims import CLAIMS, Arm, Claim, get_claim
from .report import write_report
from .run import AblationReport, ArmResult, run_ablation
from .stats import Difference, Summary, difference

__all__ = [
    "CLAIMS",
    "AblationReport",
    "Arm",
    "ArmResult",
    "Claim",
    "Difference",
    "Summary",
    "difference",
    "get_claim",
    "run_ablation",
    "write_report",
]
