"""How an ONNX Runtime session gets its inputs and outputs: plain `run` through host memory, or I/O binding
with the tensors on the device. NOT YET RUN ON A GPU (the device-side paths are guarded; the choice and the
OrtValue binding are tested on CPU, where ONNX Runtime binds CPU memory the same way).

`session.run` with numpy arrays copies the input to the GPU and the output back on every call, through
buffers ONNX Runtime allocates each time. With I/O binding the input is already where the session runs:
- `torch`: the uint8 batch is uploaded from page-locked memory and normalised on the GPU by torch, and the
  session reads and writes torch CUDA buffers by pointer; only the [N, 512] vectors come back.
- `ortvalue`: without torch (the CPU-only image has none), the normalised batch becomes an OrtValue on the
  device and the output is allocated there by ONNX Runtime.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from enum import Enum
from typing import Any

import numpy as np

from photodedup.engines.base import Device

log = logging.getLogger(__name__)

GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})


class Binding(Enum):
    HOST = "host"  # session.run with numpy arrays
    ORTVALUE = "ortvalue"  # I/O binding, OrtValues on the device, normalised on the CPU
    TORCH = "torch"  # I/O binding to torch CUDA buffers, uint8 upload, normalised on the device


def choose_binding(device: Device, session_providers: Iterable[str], torch_cuda: bool) -> Binding:
    """The binding for a session that ended up with `session_providers` (`session.get_providers()`).

    Args:
        device: where the engine runs.
        session_providers: the providers the session really uses (ONNX Runtime may have dropped some).
        torch_cuda: whether torch is importable here and sees `device` (checked by the caller).
    """
    if device.kind != "cuda" or not GPU_PROVIDERS.intersection(session_providers):
        return Binding.HOST
    return Binding.TORCH if torch_cuda else Binding.ORTVALUE


class OrtValueRunner:
    """I/O binding with OrtValues: the input is placed on `device_type` once per call and the output is
    allocated there by ONNX Runtime, then copied back as one array."""

    def __init__(self, ort: Any, session: Any, input_name: str, output_name: str, device_type: str, device_id: int):
        self._ort = ort
        self._session = session
        self._input = input_name
        self._output = output_name
        self.device_type = device_type
        self.device_id = device_id

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        binding = self._session.io_binding()
        value = self._ort.OrtValue.ortvalue_from_numpy(batch, self.device_type, self.device_id)
        binding.bind_ortvalue_input(self._input, value)
        binding.bind_output(self._output, self.device_type, self.device_id)
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


class TorchBindingRunner:  # pragma: no cover - needs CUDA and torch
    """I/O binding to torch CUDA tensors: normalise the uint8 NHWC batch on the device, let the session read
    it and write its output into a torch buffer by pointer."""

    def __init__(
        self, torch: Any, session: Any, input_name: str, output_name: str, device: Device, dim: int, mean: Any, std: Any
    ) -> None:
        self._torch = torch
        self._session = session
        self._input = input_name
        self._output = output_name
        self._device = str(device)
        self._device_id = device.index
        self._dim = dim
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(mean, device=self._device).view(shape) * 255.0
        self._std = torch.tensor(std, device=self._device).view(shape) * 255.0

    def stack(self, arrays: list[np.ndarray]) -> Any:
        """Preprocess (CPU pool): the batch as uint8 NHWC in page-locked memory."""
        out = self._torch.empty((len(arrays), *arrays[0].shape), dtype=self._torch.uint8, pin_memory=True)
        np.stack(arrays, out=out.numpy())
        return out

    def __call__(self, pinned: Any) -> np.ndarray:
        torch = self._torch
        x = pinned.to(self._device, non_blocking=True).permute(0, 3, 1, 2).float()
        x = ((x - self._mean) / self._std).contiguous()
        out = torch.empty((x.shape[0], self._dim), dtype=torch.float32, device=self._device)
        binding = self._session.io_binding()
        binding.bind_input(self._input, "cuda", self._device_id, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output(self._output, "cuda", self._device_id, np.float32, tuple(out.shape), out.data_ptr())
        torch.cuda.current_stream(self._device_id).synchronize()  # the session runs on its own stream
        self._session.run_with_iobinding(binding)
        binding.synchronize_outputs()  # the session's stream has written `out` before torch reads it
        return out.cpu().numpy()
