"""The keyword options every model builder accepts besides ``width_mult`` (see ``build_mobilenet``)."""

from __future__ import annotations

from typing import TypedDict

from ..layers.norm import NormConfig


class BuildOptions(TypedDict, total=False):
    """Options shared by every builder; :func:`~mobilenets.models.builder.build_mobilenet` documents them."""

    num_classes: int
    in_channels: int
    dropout: float
    drop_path_rate: float
    output_stride: int
    dilate: bool
    keep_last_wide: bool
    fix_stem: bool
    norm: NormConfig | str
    norm_eps: float
    activation: str
    padding: str
    small_input: bool | int
    features_only: bool
    out_indices: tuple[int, ...]
    pretrained: bool | str  # True or a weights tag: see mobilenets.weights.registry
    # Ablation switches (mobilenets ablate): the seed's design choices, each undone alone.
    separable: bool
    projection_activation: str | None
    shortcut: str
    # Initialisation: residual blocks start as the identity (see build_mobilenet).
    zero_init_residual: bool
