"""Peak activation memory of one forward pass under the plain sequential schedule (v2 paper §5.1, eq. 2).

The network is a sequence of operations (a fused conv-norm-act, a squeeze-excite, a residual addition,
pooling, a fully-connected layer). Running them one after the other, the memory needed at an operation
is the size of every tensor still alive then: its inputs, its output, and any tensor computed earlier
and consumed later (the input of a residual block waits for the addition at its end). The peak is the
largest such total. We find it by running the model once and recording which operation produced and
which consumed each tensor. A tensor read between operations (a skip added or concatenated by any
module's own code, a flatten before the classifier) stays alive until the operation before that read,
so skip connections of any shape are counted without special cases; the additions of this library's
blocks are ops of their own (``NAME.add``), and so are those between the expanded layers of an
:class:`ExpansionShortcutStage`, added where their sum first appears as an op's input.
A module with a ``scratch_bytes(input, bytes_per_element)`` method (the chunked blocks of
:mod:`mobilenets.deploy.memory_efficient`) is one op whose own transient tensors add to its total. A
conv with TensorFlow "same" padding (:class:`~mobilenets.layers.padding.Conv2dSame`) reads a
zero-padded copy of its input, which adds to its op's total the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..layers.conv_norm_act import ConvNormAct
from ..layers.inverted_residual import ExpansionShortcutStage, InvertedResidual
from ..layers.padding import Conv2dSame, tf_same_pads
from ..layers.squeeze_excite import SqueezeExcite
from .trace import record_calls

_OP_TYPES = (ConvNormAct, SqueezeExcite, nn.Conv2d, nn.Linear, nn.AdaptiveAvgPool2d)


@dataclass(frozen=True)
class OpMemory:
    """One operation of the schedule and the bytes alive while it runs."""

    name: str
    live_bytes: int
    output_shape: tuple[int, ...]


@dataclass(frozen=True)
class _Event:
    name: str
    inputs: tuple[torch.Tensor, ...]
    output: torch.Tensor
    scratch: int = 0  # bytes alive only inside the op (a chunked block's current chunk)


def _is_op(module: nn.Module) -> bool:
    # Modules that know their own transient memory (chunked blocks) are single ops of the schedule.
    return isinstance(module, _OP_TYPES) or hasattr(module, "scratch_bytes")


def _op_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Outermost operation modules: a ConvNormAct counts as one op, its conv is not counted again."""
    ops: list[tuple[str, nn.Module]] = []
    covered: list[str] = []
    for name, module in model.named_modules():
        if any(not prefix or name.startswith(prefix + ".") for prefix in covered):  # "": the model itself
            continue
        if _is_op(module):
            ops.append((name, module))
            covered.append(name)
    return ops


def _padded_copy_bytes(module: nn.Module, x: torch.Tensor, bytes_per_element: int) -> int:
    """Bytes of the zero-padded copy of ``x`` a TF-"same" conv op makes before convolving (0 if none)."""
    conv = module.conv if isinstance(module, ConvNormAct) else module
    if not isinstance(conv, Conv2dSame):
        return 0
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    n, c, h, w = x.shape
    pad_h, pad_w = sum(tf_same_pads(h, kh, sh, dh)), sum(tf_same_pads(w, kw, sw, dw))
    return n * c * (h + pad_h) * (w + pad_w) * bytes_per_element if pad_h or pad_w else 0


def _key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


class _ReadsBetweenOps(TorchDispatchMode):
    """The tensors each aten operation outside the schedule's ops reads (``x + f(x)`` in a module's own
    code), each as ``(storage key, calls finished before the read)``. Ops call ``enter``/``leave``."""

    def __init__(self) -> None:
        super().__init__()
        self.finished = 0  # calls finished: those record_calls records, in the same order
        self.depth = 0  # > 0 inside an op, whose own reads are its business
        self.reads: list[tuple[int, int]] = []

    def enter(self, *_: object) -> None:
        self.depth += 1

    def leave(self, *_: object) -> None:
        self.depth -= 1
        self.finished += 1

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if self.depth == 0 and self.finished:
            self.reads.extend(
                (_key(t), self.finished) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)
            )
        return func(*args, **(kwargs or {}))


def _stage_block(op_name: str, stages: list[str]) -> str | None:
    """``S.I`` when ``op_name`` is an op of block ``I`` of the :class:`ExpansionShortcutStage` ``S``."""
    for stage in stages:
        index, dot, _ = op_name.removeprefix(f"{stage}.").partition(".")
        if op_name.startswith(f"{stage}.") and dot and index.isdigit():
            return f"{stage}.{index}"
    return None


def _previous_block(block: str) -> str:
    stage, _, index = block.rpartition(".")
    return f"{stage}.{int(index) - 1}"


def schedule_memory(model: nn.Module, example: torch.Tensor, *, bytes_per_element: int = 4) -> list[OpMemory]:
    """Live activation bytes at each operation of ``model``'s plain sequential schedule on ``example``."""
    op_names = {name for name, _ in _op_modules(model)}
    returned: list[object] = []  # what forward returns (a backbone's feature maps) lives to the end

    def keep_returned(module: nn.Module, inputs: object, output: object) -> None:
        returned.extend(tree_leaves(output))

    def selected(name: str, module: nn.Module) -> bool:
        return name in op_names or (isinstance(module, InvertedResidual) and module.has_residual)

    reads = _ReadsBetweenOps()
    handles = [model.register_forward_hook(keep_returned)]
    for name, module in model.named_modules():
        if name in op_names:
            handles.append(module.register_forward_pre_hook(reads.enter))
            handles.append(module.register_forward_hook(reads.leave))
        elif selected(name, module):  # a residual block is no op: its own code runs between its ops
            handles.append(module.register_forward_hook(_count_finished(reads)))
    try:
        with reads:
            calls = record_calls(model, example, selected)
    finally:
        for handle in handles:
            handle.remove()
    stages = [name for name, module in model.named_modules() if isinstance(module, ExpansionShortcutStage)]
    produced = {_key(example)}
    hidden: dict[str, torch.Tensor] = {}  # per block of such a stage: the expanded tensor it projects
    events: list[_Event] = []
    event_after_call: list[int] = []  # the index of the last event once each call is scheduled
    for call in calls:
        block = _stage_block(call.name, stages)
        if block is not None and not call.name.endswith(".conv_pw") and block not in hidden:
            if _key(call.inputs[0]) not in produced:  # an addition the stage made between two ops
                source = hidden[_previous_block(block)]
                events.append(_Event(f"{block}.add", (source, events[-1].output), call.inputs[0]))
            hidden[block] = call.inputs[0]
        if isinstance(call.module, InvertedResidual):
            # The addition joins the block's input (kept alive all along) and its last op's output.
            events.append(_Event(f"{call.name}.add", (call.inputs[0], events[-1].output), call.output))
        else:
            scratch_fn = getattr(call.module, "scratch_bytes", None)
            if scratch_fn is not None:
                scratch = scratch_fn(call.inputs[0], bytes_per_element)
            else:
                scratch = _padded_copy_bytes(call.module, call.inputs[0], bytes_per_element)
            events.append(_Event(call.name, call.inputs, call.output, scratch))
        produced.add(_key(events[-1].output))
        event_after_call.append(len(events) - 1)

    sizes: dict[int, int] = {}
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for index, event in enumerate(events):
        for tensor in event.inputs:
            key = _key(tensor)
            sizes.setdefault(key, tensor.numel() * bytes_per_element)
            first.setdefault(key, index)
            last[key] = index
        key = _key(event.output)
        sizes[key] = max(sizes.get(key, 0), event.output.numel() * bytes_per_element)
        first.setdefault(key, index)
        last[key] = max(last.get(key, index), index)
    for key, finished in reads.reads:  # read between ops: alive through the op before the read
        if key in last and first[key] <= event_after_call[finished - 1]:
            last[key] = max(last[key], event_after_call[finished - 1])
    for value in returned:
        if isinstance(value, torch.Tensor) and _key(value) in last:
            last[_key(value)] = len(events) - 1
    result = []
    for index, event in enumerate(events):
        live = event.scratch + sum(size for key, size in sizes.items() if first[key] <= index <= last[key])
        result.append(OpMemory(event.name, live, tuple(event.output.shape)))
    return result


def _count_finished(reads: _ReadsBetweenOps) -> Any:
    """A forward hook counting a finished call that is not an op (a residual block) for ``reads``."""

    def hook(*_: object) -> None:
        reads.finished += 1

    return hook


def peak_activation_bytes(model: nn.Module, example: torch.Tensor, *, bytes_per_element: int = 4) -> int:
    """The largest live activation total over the plain schedule (see the module docstring)."""
    return max(op.live_bytes for op in schedule_memory(model, example, bytes_per_element=bytes_per_element))
