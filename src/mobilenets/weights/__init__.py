"""Loading and converting weights trained elsewhere."""

from .torchvision_keys import torchvision_key_map, torchvision_module_map

__all__ = ["torchvision_key_map", "torchvision_module_map"]
