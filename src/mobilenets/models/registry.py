"""Model registry: ``create_model(name, **kwargs)`` and ``list_models(pattern)``."""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast, overload

from ..errors import UsageError, WrongTypeError
from .builder import MAX_WIDTH_MULT, check_build_options, check_width_mult
from .hub import build_pretrained, check_tag
from .mobilenet import MobileNet
from .options import BuildOptions

Builder = Callable[..., MobileNet]
_B = TypeVar("_B", bound=Builder)

_REGISTRY: dict[str, Builder] = {}
_MAX_WIDTH_MULT: dict[str, float] = {}
_SHARED_OPTIONS = frozenset(inspect.signature(check_build_options).parameters)


@overload
def register_model(builder: _B, /) -> _B: ...
@overload
def register_model(*, max_width_mult: float = MAX_WIDTH_MULT) -> Callable[[_B], _B]: ...
def register_model(
    builder: _B | None = None, /, *, max_width_mult: float = MAX_WIDTH_MULT
) -> _B | Callable[[_B], _B]:
    """Decorator: make a keyword-only builder available to ``create_model`` under its function name.

    The decorated builder also takes ``pretrained`` (``True`` or a weights tag), as ``create_model`` does.

    ``@register_model`` or ``@register_model(max_width_mult=...)``: the largest ``width_mult`` the builder
    accepts, when it scales widths itself (EfficientNet-Lite multiplies its own width coefficient), so
    :func:`check_model_options` applies the builder's limit without building.
    """

    def register(function: _B) -> _B:
        name = function.__name__
        if name in _REGISTRY:
            raise UsageError(f"model {name!r} is already registered")

        @functools.wraps(function)
        def builder(**kwargs: Any) -> MobileNet:
            pretrained = kwargs.pop("pretrained", False)
            if pretrained is False or pretrained is None:
                return function(**kwargs)
            return build_pretrained(name, pretrained, kwargs)

        _REGISTRY[name] = builder
        _MAX_WIDTH_MULT[name] = max_width_mult
        return cast(_B, builder)

    return register if builder is None else register(builder)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (e.g. ``"mobilenet_v3*"``), sorted."""
    if not isinstance(pattern, str):
        raise WrongTypeError(
            f"pattern must be a string such as 'mobilenet_v3*', got {type(pattern).__name__}"
        )
    return sorted(name for name in _REGISTRY if fnmatch.fnmatch(name, pattern))


def get_builder(name: str) -> Builder:
    """The builder registered as ``name``; an unknown name raises ``ValueError`` listing close matches."""
    if not isinstance(name, str):
        raise WrongTypeError(f"model name must be a string, got {type(name).__name__}; see list_models()")
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "."
        raise UsageError(f"unknown model {name!r}{hint} Available models: {', '.join(list_models())}")
    return _REGISTRY[name]


def _check_keywords(name: str, builder: Builder, kwargs: dict[str, Any]) -> None:
    parameters = inspect.signature(builder).parameters.values()
    accepted = [p.name for p in parameters if p.kind is p.KEYWORD_ONLY]
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        accepted += sorted(BuildOptions.__optional_keys__ | BuildOptions.__required_keys__)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise WrongTypeError(
            f"{name}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted)}"
        )


def check_model_options(name: str, **kwargs: object) -> None:
    """Raise what ``create_model(name, **kwargs)`` would for a bad name, keyword or value, building nothing.

    For configuration that must fail before slow work (``TrainConfig`` checks its model options before
    any data is read): the builders' own checks (:func:`~mobilenets.models.builder.check_width_mult`
    with the model's limit, :func:`~mobilenets.models.builder.check_build_options`), so the rules have
    one owner. Options specific to one builder, and those that depend on its architecture, are checked
    when it builds.
    """
    builder = get_builder(name)
    _check_keywords(name, builder, kwargs)
    check_width_mult(kwargs.get("width_mult", 1.0), limit=_MAX_WIDTH_MULT[name])
    shared: dict[str, Any] = {key: value for key, value in kwargs.items() if key in _SHARED_OPTIONS}
    check_build_options(**shared)


def create_model(name: str, pretrained: bool | str = False, **kwargs: object) -> MobileNet:
    """Build the registered model ``name`` with the builder's keyword arguments, as timm's does.

    ``pretrained=True`` loads the model's packaged ImageNet weights (``"TAG"``: those tagged so; a
    ``MODEL.TAG`` name does the same), with the build options they need and their ``pretrained_cfg``;
    nothing is downloaded. A different ``num_classes`` keeps the body and starts a new classifier.
    An unknown keyword raises ``TypeError`` naming it and listing the accepted ones.
    """
    if isinstance(name, str) and "." in name:
        name, tag = name.split(".", 1)
        get_builder(name)  # an unknown model is named first
        check_tag(name, tag)
        pretrained = tag if pretrained is True else pretrained
    builder = get_builder(name)
    _check_keywords(name, builder, kwargs)
    return builder(pretrained=pretrained, **kwargs)
