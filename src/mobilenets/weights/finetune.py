"""Start a training run from weights trained elsewhere (fine-tuning): the body must fit, the head may not.

The weights come from a file any :func:`load_weights` source can read (torchvision, timm,
EfficientNet-PyTorch, our own checkpoints) or from a registry name (:data:`PRETRAINED`). Every tensor
of the network's body must load; the classifier loads only when its shape fits, so ImageNet weights
start a 10-class run with a freshly initialised head. Build options a source's own models use (e.g.
TensorFlow padding) are not applied: the model is the one the run asked for, and the weights are its
starting point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import MissingFileError, UsageError
from ..models import MobileNet
from .load import LoadReport, load_weights, stem_width_differs
from .registry import PRETRAINED, get_pretrained

HEAD_PREFIX = "classifier."  # our classifier's parameters; everything else is the body


def resolve_pretrained(spec: str, *, model: str | None = None) -> Path:
    """The weights file named by ``spec``: a registry name (see :data:`PRETRAINED`) or a file path.

    Registry names are ``MODEL.TAG``, their aliases, or a model name; with ``model`` given, they must be
    weights for that architecture (``UsageError``). The file's SHA-256 is checked. ``MissingFileError``
    when ``spec`` is neither a registry name nor an existing file.
    """
    path = Path(spec)
    if path.is_file():
        return path
    try:
        entry = get_pretrained(spec)
    except UsageError:
        raise MissingFileError(
            f"pretrained weights {spec!r}: no such file, and not a registry name "
            f"(registry: {', '.join(PRETRAINED)})"
        ) from None
    if model is not None and entry.model != model:
        raise UsageError(f"pretrained weights {spec!r} are for {entry.model}, not {model}")
    return entry.verified_path()


@dataclass(frozen=True)
class FinetuneStart:
    """What :func:`load_for_finetuning` loaded: the weights' project, tensor count, and the head's fate."""

    source: str
    loaded: int
    head_loaded: bool

    def describe(self, path: Path) -> str:
        """One line for the training log."""
        head = "classifier loaded" if self.head_loaded else "classifier freshly initialised (shape differs)"
        return f"pretrained: {self.loaded} tensors from {self.source} weights {str(path)!r}; {head}"


def load_for_finetuning(model: MobileNet, path: Path) -> FinetuneStart:
    """Load ``path`` into ``model``: all of the body, the classifier if it fits.

    ``ValueError`` naming the first offending tensors when the body does not fit; ``model`` is then
    left as it was.
    """
    before = {key: tensor.clone() for key, tensor in model.state_dict().items()}
    report: LoadReport = load_weights(model, path, strict=False)
    body_missing = [key for key in report.missing if not key.startswith(HEAD_PREFIX)]
    body_mismatched = [item for item in report.mismatched if not item.startswith(HEAD_PREFIX)]
    if body_missing or body_mismatched or report.unexpected:
        model.load_state_dict(before)
        problems = LoadReport(
            report.source, report.loaded, tuple(body_missing), report.unexpected, tuple(body_mismatched)
        )
        advice = (
            "the file's stem keeps its table width (as timm's MobileNetV3 below width 0.75 do): add "
            "--fix-stem (fix_stem=True in Python)"
            if stem_width_differs(problems)
            else "Check --model and --width-mult"
        )
        raise UsageError(
            f"{report.source} weights {str(path)!r} do not fit the body of {type(model).__name__} "
            f"(only the classifier may differ): {problems.describe()}. {advice}"
        )
    head_loaded = any(key.startswith(HEAD_PREFIX) for key in report.loaded)
    return FinetuneStart(report.source, len(report.loaded), head_loaded)
