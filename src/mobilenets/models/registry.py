"""Model registry: ``create_model(name, **kwargs)`` and ``list_models(pattern)``."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from typing import TypeVar

from ..errors import UsageError, WrongTypeError
from .mobilenet import MobileNet
from .options import BuildOptions

Builder = Callable[..., MobileNet]
_B = TypeVar("_B", bound=Builder)

_REGISTRY: dict[str, Builder] = {}


def register_model(builder: _B) -> _B:
    """Decorator: make a keyword-only builder available to ``create_model`` under its function name."""
    name = builder.__name__
    if name in _REGISTRY:
        raise UsageError(f"model {name!r} is already registered")
    _REGISTRY[name] = builder
    return builder


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
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown model {name!r}{hint} Available models: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, **kwargs: object) -> MobileNet:
    """Build the registered model ``name`` with the builder's keyword arguments.

    An unknown keyword raises ``TypeError`` naming it and listing the accepted ones.
    """
    builder = get_builder(name)
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
    return builder(**kwargs)
