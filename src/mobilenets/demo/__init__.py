"""The application behind ``make demo``: measure what depthwise separable convolutions buy, train the
networks on the built-in digits, deploy the trained model, and write one report."""

from .run import run_demo

__all__ = ["run_demo"]
