"""int8 OpenVINO IRs that take their input already quantized: uint8 values in NHWC.

NNCF's int8 IR begins with a FakeQuantize of the float NCHW input. OpenVINO runs it as a quantize
followed by a reorder to the channels-last layout its int8 stem convolution reads: about 3% of a
mobilenet_v2 call on the AVX-512 EPYC (``mobilenets bench --pair
ours_openvino_uint8,ours_openvino_int8``). An IR that takes the quantized values themselves, uint8 in
NHWC as cameras and decoders deliver pixels, skips both. The
app maps each pixel through one table per channel (:func:`pixel_table`: normalise, then quantize)
instead of normalising floats and transposing to NCHW; TensorFlow Lite's uint8-input models work the
same way. The network is unchanged: the IR dequantizes the input as the FakeQuantize would,
``(q - zero_point) * scale``, and OpenVINO folds that into the stem convolution.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import UsageError
from ..weights.card import ModelCard

LEVELS = 256  # uint8
RT_INFO_PATH = ["mobilenets", "input_quantization"]  # JSON of InputQuantization.to_dict(), in the IR


@dataclass(frozen=True)
class InputQuantization:
    """How an IR's uint8 input maps to the float input it stands for: ``(q - zero_point) * scale``."""

    scale: float
    zero_point: int

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float NCHW images (normalised as the model expects) as the IR's uint8 NHWC input."""
        q = np.clip(np.rint(x / np.float32(self.scale) + self.zero_point), 0, LEVELS - 1)
        return np.ascontiguousarray(q.astype(np.uint8).transpose(0, 2, 3, 1))

    def to_dict(self) -> dict[str, Any]:
        """What the IR records (:data:`RT_INFO_PATH`) and ``export --json`` reports."""
        return {"dtype": "uint8", "layout": "NHWC", **asdict(self)}


def input_quantization(ov_model: Any) -> InputQuantization | None:
    """The mapping :func:`take_quantized_input` recorded in ``ov_model``, or None (float input)."""
    if not ov_model.has_rt_info(RT_INFO_PATH):
        return None
    entry = json.loads(ov_model.get_rt_info(RT_INFO_PATH).astype(str))
    return InputQuantization(float(entry["scale"]), int(entry["zero_point"]))


def take_quantized_input(ov_model: Any) -> tuple[Any, InputQuantization]:
    """``ov_model`` (an NNCF int8 IR taking float NCHW), changed in place to take uint8 NHWC instead,
    and its mapping, which the model also records (:func:`input_quantization`).

    The FakeQuantize on the input is cut out; a new input of uint8 (N, R, R, 3), its dimensions free
    where the float input's were, is dequantized in the graph and transposed to NCHW where the
    FakeQuantize's output went. Refused (``UsageError``) when the input is not quantized by one
    per-tensor uint8 FakeQuantize, for example with the stem left float (``keep_float``).
    """
    import openvino as ov
    import openvino.opset13 as ops

    (parameter,) = ov_model.get_parameters()
    shape = parameter.get_partial_shape()
    consumers = [target.get_node() for target in parameter.output(0).get_target_inputs()]
    fake = consumers[0] if len(consumers) == 1 else None
    why = _unsupported(fake)
    if fake is None or why:
        raise UsageError(
            f"uint8_input (--uint8-input): {why}; the input must feed one per-tensor uint8 "
            "FakeQuantize (NNCF's int8 of a stem left int8: drop the stem from keep_float)"
        )
    low, high = (float(fake.input_value(index).get_node().get_data().item()) for index in (3, 4))
    scale = (high - low) / (LEVELS - 1)
    zero_point = round(-low / scale)
    if not 0 <= zero_point < LEVELS or abs(zero_point + low / scale) > 1e-3:
        raise UsageError(
            f"uint8_input (--uint8-input): the input's quantization range {low:g}..{high:g} puts zero "
            "off the uint8 grid; export with float input"
        )
    # The float input's dimensions in NHWC order, free where they were free (a GroupNorm network's IR
    # keeps its spatial size free: OpenVINO's compiler crashes on it with a fixed one).
    size = [shape[index] for index in (0, 2, 3, 1)]
    pixels = ops.parameter(ov.PartialShape(size), ov.Type.u8, name=parameter.get_friendly_name())
    shifted = ops.subtract(ops.convert(pixels, ov.Type.f32), ops.constant(np.float32(zero_point)))
    values = ops.multiply(shifted, ops.constant(np.float32(scale)))
    nchw = ops.transpose(values, ops.constant(np.array([0, 3, 1, 2], np.int64)))
    for target in list(fake.output(0).get_target_inputs()):
        target.replace_source_output(nchw.output(0))
    ov_model.replace_parameter(0, pixels)  # the model keeps its rt_info (NNCF's, the card)
    ov_model.validate_nodes_and_infer_types()
    quantization = InputQuantization(scale, zero_point)
    ov_model.set_rt_info(json.dumps(quantization.to_dict(), sort_keys=True), RT_INFO_PATH)
    return ov_model, quantization


def _unsupported(fake: Any) -> str:
    """Why ``fake`` is not a FakeQuantize this module can cut out ("" if it is)."""
    if fake is None or fake.get_type_name() != "FakeQuantize":
        return "the IR's input is not quantized (no single FakeQuantize reads it)"
    if fake.get_attributes()["levels"] != LEVELS:
        return f"the input's FakeQuantize has {fake.get_attributes()['levels']} levels, not {LEVELS}"
    ranges = [fake.input_value(index).get_node() for index in range(1, 5)]
    if any(node.get_type_name() != "Constant" or node.get_data().size != 1 for node in ranges):
        return "the input's FakeQuantize is not per-tensor"
    in_low, in_high, out_low, out_high = (node.get_data().item() for node in ranges)
    if not (np.isclose(in_low, out_low) and np.isclose(in_high, out_high)):
        return "the input's FakeQuantize rescales its values"
    return ""


def pixel_table(card: ModelCard, quantization: InputQuantization) -> np.ndarray:
    """(3, 256) uint8: row c maps a channel-c pixel value 0..255 to the IR's input value.

    The card's normalisation ``(p / 255 - mean) / std``, then :meth:`InputQuantization.quantize`: an
    app resizes its RGB image as the card says and indexes ``table[c, pixels[..., c]]``, in NHWC.
    """
    levels = np.arange(LEVELS, dtype=np.float32) / (LEVELS - 1)
    mean = np.asarray(card.mean, np.float32)[:, None]
    std = np.asarray(card.std, np.float32)[:, None]
    normalised = (levels[None, :] - mean) / std  # (3, 256) as one NCHW "image" of 3 x 1 x 256
    return quantization.quantize(normalised[None, :, None, :])[0, 0].T.copy()
