"""Export the image tower as a Triton Inference Server model repository (ONNX Runtime backend).

For people who already run Triton: the same cached ONNX export our ONNX engine runs, with a
config.pbtxt that turns on Triton's dynamic batcher and, optionally, its TensorRT FP16 accelerator.
Clients must L2-normalise the output themselves (our own server does it for them).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from photodedup.engines.onnx_export import ensure_onnx
from photodedup.settings import Settings


def triton_config(
    name: str,
    embedding_dim: int,
    input_size: int,
    max_batch_size: int,
    max_queue_delay_us: int,
    gpus: int,
    tensorrt_fp16: bool,
) -> str:
    """config.pbtxt text; `gpus` = 0 means a CPU instance."""
    instance = (
        f"instance_group [{{ count: 1, kind: KIND_GPU, gpus: [{', '.join(str(i) for i in range(gpus))}] }}]"
        if gpus
        else "instance_group [{ count: 1, kind: KIND_CPU }]"
    )
    accel = ""
    if tensorrt_fp16 and gpus:
        accel = (
            'optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "tensorrt" '
            'parameters { key: "precision_mode" value: "FP16" } } ] } }\n'
        )
    return (
        f'name: "{name}"\n'
        'platform: "onnxruntime_onnx"\n'
        f"max_batch_size: {max_batch_size}\n"
        f'input [{{ name: "pixel_values" data_type: TYPE_FP32 dims: [3, {input_size}, {input_size}] }}]\n'
        f'output [{{ name: "embedding" data_type: TYPE_FP32 dims: [{embedding_dim}] }}]\n'
        f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}\n"
        f"{instance}\n"
        f"{accel}"
    )


def export_triton_repository(settings: Settings, out_dir: Path, name: str, gpus: int, tensorrt_fp16: bool) -> Path:
    """Write `<out_dir>/<name>/1/model.onnx` and `<out_dir>/<name>/config.pbtxt`; returns the model folder."""
    onnx_path, info = ensure_onnx(settings)
    model_dir = out_dir / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, model_dir / "1" / "model.onnx")
    prep = info.preprocessing
    config = triton_config(
        name,
        info.embedding_dim,
        prep.input_size,
        settings.server.max_batch_size,
        int(settings.server.max_queue_delay_ms * 1000),
        gpus,
        tensorrt_fp16,
    )
    config += (
        f"# model_id: {info.model_id}\n"
        f"# preprocessing: RGB, bicubic short side to {prep.input_size}, centre crop, /255, "
        f"mean {list(prep.mean)}, std {list(prep.std)}; L2-normalise the output\n"
    )
    (model_dir / "config.pbtxt").write_text(config)
    return model_dir
