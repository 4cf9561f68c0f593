"""Scoring a classifier on labelled images: top-k accuracy, per-class recall, confusion matrix, plots."""

from .evaluate import evaluate
from .metrics import ClassificationMetrics
from .plots import plot_confusion_matrix

__all__ = ["ClassificationMetrics", "evaluate", "plot_confusion_matrix"]
