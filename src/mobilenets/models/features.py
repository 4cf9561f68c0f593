"""Multi-scale feature levels, described the way timm's backbone clients read them.

Detection and segmentation code built on timm backbones reads ``model.feature_info.channels()``,
``.reduction()`` and ``.module_name()`` (the levels ``out_indices`` selects), indexes levels as dicts
(``feature_info[i]["num_chs"]``) and calls ``forward_intermediates(x, indices=...)``. These classes give
that interface, with typed records for code of our own (``level.num_chs``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, overload

from ..errors import UsageError

Indices = int | Sequence[int] | None


@dataclass(frozen=True)
class FeatureLevel:
    """One feature level: the module it is taken after, its channels and its stride to the input.

    Reads as a record (``level.num_chs``) and as timm's dict (``level["num_chs"]``, ``dict(level)``).
    """

    module: str
    num_chs: int
    reduction: int

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(f"{key!r}; a feature level has {', '.join(self.keys())}")
        return getattr(self, key)

    def keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default


def take_indices(num_levels: int, indices: Indices) -> list[int]:
    """Absolute level indices, as timm's ``feature_take_indices`` reads ``indices``.

    ``None``: every level; an int ``n``: the last ``n``; a sequence: those levels (negative from the
    end). Out-of-range values raise ``UsageError`` naming the range.
    """
    if indices is None:
        indices = num_levels
    if isinstance(indices, bool):
        raise UsageError(
            f"indices must be an int (last n levels) or a sequence of level indices, got {indices!r}"
        )
    if isinstance(indices, int):
        if not 0 < indices <= num_levels:
            raise UsageError(
                f"indices={indices} asks for the last {indices} feature levels; the model has {num_levels}"
            )
        return list(range(num_levels - indices, num_levels))
    taken = []
    for index in indices:
        if type(index) is not int or not -num_levels <= index < num_levels:
            raise UsageError(f"feature level index {index!r} is out of range for {num_levels} levels")
        taken.append(index % num_levels)
    if not taken:
        raise UsageError("indices is empty; name at least one feature level")
    return taken


class FeatureInfo:
    """The feature levels of a model and those ``out_indices`` selects (timm's ``FeatureInfo`` interface).

    Accessors without ``idx`` answer for the selected levels; with an int or a list of ints, for those
    levels of all. Iteration, ``len`` and indexing cover every level, as a list of records would.
    """

    def __init__(self, levels: Sequence[FeatureLevel], out_indices: Sequence[int] | None = None) -> None:
        self.levels = tuple(levels)
        self.out_indices = tuple(take_indices(len(self.levels), out_indices))

    def from_other(self, out_indices: Sequence[int]) -> FeatureInfo:
        """The same levels with another selection."""
        return FeatureInfo(self.levels, out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [self.levels[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.levels[idx][key]
        return [self.levels[i][key] for i in idx]

    def get_dicts(
        self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None
    ) -> dict[str, Any] | list[dict[str, Any]]:
        def as_dict(level: FeatureLevel) -> dict[str, Any]:
            return {key: level[key] for key in (keys or level.keys())}

        if isinstance(idx, int):
            return as_dict(self.levels[idx])
        return [as_dict(self.levels[i]) for i in (self.out_indices if idx is None else idx)]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        """Channels of the selected levels (or of ``idx``)."""
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        """Stride to the input of the selected levels (or of ``idx``)."""
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        """Module names (``stem``, ``blocks.S.I``) of the selected levels (or of ``idx``)."""
        return self.get("module", idx)

    @overload
    def __getitem__(self, item: int) -> FeatureLevel: ...
    @overload
    def __getitem__(self, item: slice) -> tuple[FeatureLevel, ...]: ...
    def __getitem__(self, item: int | slice) -> FeatureLevel | tuple[FeatureLevel, ...]:
        return self.levels[item]

    def __len__(self) -> int:
        return len(self.levels)

    def __iter__(self) -> Iterator[FeatureLevel]:
        return iter(self.levels)

    def __repr__(self) -> str:
        return f"FeatureInfo({list(self.levels)!r}, out_indices={self.out_indices})"
