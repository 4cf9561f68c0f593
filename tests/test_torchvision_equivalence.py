"""torchvision's MobileNet v2/v3 state_dicts load into ours through the documented key map."""

from __future__ import annotations

import pytest
import torch
import torchvision

import mobilenets
from mobilenets.weights import torchvision_key_map
from tests.conftest import randomize_norm_stats


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"])
def test_torchvision_weights_give_the_same_logits(name: str) -> None:
    reference = getattr(torchvision.models, name)(weights=None).eval()
    randomize_norm_stats(reference)
    ours = mobilenets.create_model(name).eval()
    key_map = torchvision_key_map(ours)
    state = reference.state_dict()
    assert set(key_map) == set(state)
    assert set(key_map.values()) == set(ours.state_dict())
    ours.load_state_dict({key_map[key]: value for key, value in state.items()}, strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, actual = reference(x), ours(x)
    assert expected.abs().max() > 1e-3  # the comparison is not between two near-zero outputs
    assert (expected - actual).abs().max() <= 1e-5


def test_key_map_refuses_models_without_torchvision_layout() -> None:
    with pytest.raises(ValueError, match="mobilenet_v2 and mobilenet_v3"):
        torchvision_key_map(mobilenets.mobilenet_v1())
