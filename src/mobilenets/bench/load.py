"""A timing process's side of ``mobilenets bench``: one variant, loaded from the prepared files.

Each variant becomes a zero-argument callable that classifies the prepared input batch once. Only
loading happens here (weights into a freshly built model, an ONNX file into a session, a saved
program); what compiles (``torch.compile``, the PT2E int8 program's Inductor compile) does so on its
first call, which is part of the timing process's warm-up. ONNX Runtime sessions keep ONNX Runtime's
default of worker threads that spin between operators: ONNX Runtime as people run it. ExecuTorch and
OpenVINO are called directly (``Method.execute``, ``InferRequest.infer``), as an app would.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models import create_model
from .variants import EXECUTORCH_VARIANTS, ONNX_VARIANTS, OPENVINO_VARIANTS
from .workfiles import WorkFiles


def _model(files: WorkFiles, side: str) -> nn.Module:
    """``side``'s model (``ours`` or ``torchvision``) in eval mode, with the prepared weights."""
    if side == "torchvision":
        import torchvision

        model: nn.Module = getattr(torchvision.models, files.model)(weights=None)
    else:
        model = create_model(files.model)
    model.load_state_dict(torch.load(files.weights(side), weights_only=True))
    return model.eval()


def _eager(model: nn.Module, x: torch.Tensor, *, channels_last: bool) -> torch.Tensor:
    if channels_last:  # our eager path takes the user's NCHW batch and converts it, every call
        x = x.contiguous(memory_format=torch.channels_last)
    return model(x)


def _ort(files: WorkFiles, variant: str, x: np.ndarray, threads: int) -> Callable[[], Any]:
    from ..deploy.onnx_export import ort_session

    side = variant.split("_")[0]
    session = ort_session(files.onnx(side, int8=variant.endswith("int8")), threads, spinning=True)
    feed = {session.get_inputs()[0].name: x}
    return functools.partial(session.run, None, feed)


def _executorch(files: WorkFiles, variant: str, x: torch.Tensor, threads: int) -> Callable[[], Any]:
    from ..deploy.executorch_export import executorch_api

    et = executorch_api()
    et.reset_threadpool(threads)
    program = et.runtime.get().load_program(files.pte(int8=variant.endswith("int8")))
    method = program.load_method("forward")
    method._program = program  # keep the program alive as long as its method
    return functools.partial(method.execute, (x,))


def _openvino(files: WorkFiles, variant: str, x: np.ndarray, threads: int) -> Callable[[], Any]:
    from ..deploy.openvino_export import compile_config, openvino_api
    from ..deploy.openvino_input import input_quantization

    side, precision = variant.split("_")[0], variant.split("_")[-1]
    core = openvino_api().Core()
    path = files.openvino(side, int8=precision.endswith("int8"), uint8_input=precision == "uint8")
    model = core.read_model(str(path))
    quantization = input_quantization(model)  # uint8: the batch as the app hands it over, quantized
    config = compile_config(threads, "fp32" if precision == "fp32" else "default")
    request = core.compile_model(model, "CPU", config).create_infer_request()
    return functools.partial(request.infer, {0: x if quantization is None else quantization.quantize(x)})


def load_variant(files: WorkFiles, variant: str, *, threads: int) -> Callable[[], object]:
    """``variant`` ready to classify the prepared batch, ONNX Runtime sessions with ``threads`` threads.

    PyTorch's thread count is the caller's to set (``torch.set_num_threads``) before calling this.
    """
    batch = np.load(files.input)
    if variant in ONNX_VARIANTS:
        return _ort(files, variant, batch, threads)
    if variant in OPENVINO_VARIANTS:
        return _openvino(files, variant, batch, threads)
    x = torch.from_numpy(batch)
    if variant in EXECUTORCH_VARIANTS:
        return _executorch(files, variant, x, threads)
    if variant == "ours_pt2e_int8":
        from ..deploy import compile_int8, load_exported

        program, _ = load_exported(files.pt2e_int8)
        return functools.partial(compile_int8(program), x)
    model = _model(files, variant.split("_")[0])
    if variant == "torchvision_eager":
        return functools.partial(_eager, model, x, channels_last=False)
    if variant == "ours_eager":
        return functools.partial(_eager, model.to(memory_format=torch.channels_last), x, channels_last=True)
    if variant == "torchvision_compile":
        return functools.partial(torch.compile(model), x)
    if variant == "ours_optimize":
        from ..deploy import optimize

        return functools.partial(optimize(model, resolution=files.resolution), x)
    raise AssertionError(f"load_variant has no case for {variant!r}")  # a bug: variants.py lists it
