"""A tiny vocoder-shaped ONNX graph for TensorRT tests (double and real GPU).

It follows hifitrt's graph contract — input ``mel`` float32 [batch, C, frames], output ``wav``
float32 [batch, 1, frames*HOP], dynamic batch and frames — with the layer types HiFi-GAN uses
(Conv, LeakyRelu, ConvTranspose, Tanh), small enough that building and running it takes
milliseconds. Built with onnx.helper (no torch export) so it is identical on every machine.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CHANNELS = 8
HOP = 4


def tiny_vocoder_model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)

    def weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)

    initializers = [
        weight("conv_pre.w", (16, CHANNELS, 3)),
        weight("conv_pre.b", (16,)),
        weight("up.w", (16, 4, 2 * HOP)),
        weight("conv_post.w", (1, 4, 7)),
    ]
    nodes = [
        helper.make_node("Conv", ["mel", "conv_pre.w", "conv_pre.b"], ["h1"], name="conv_pre", pads=[1, 1]),
        helper.make_node("LeakyRelu", ["h1"], ["h2"], name="act", alpha=0.1),
        # (T-1)*HOP - 2*(HOP//2) + 2*HOP = T*HOP samples
        helper.make_node("ConvTranspose", ["h2", "up.w"], ["h3"], name="up", strides=[HOP], pads=[HOP // 2, HOP // 2]),
        helper.make_node("Conv", ["h3", "conv_post.w"], ["h4"], name="conv_post", pads=[3, 3]),
        helper.make_node("Tanh", ["h4"], ["wav"], name="tanh"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_vocoder",
        [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["batch", CHANNELS, "frames"])],
        [helper.make_tensor_value_info("wav", TensorProto.FLOAT, ["batch", 1, "samples"])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def write_tiny_vocoder(path: Path, fp16: bool = False) -> Path:
    """Write the fp32 graph, or its FP16 version with fp32 I/O (as the precision planner does)."""
    model = tiny_vocoder_model()
    if fp16:
        from onnxconverter_common import float16

        model = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.save(model, str(path))
    return path


def bad_operator_model() -> onnx.ModelProto:
    """A graph whose second node uses an operator no ONNX importer knows."""
    nodes = [
        helper.make_node("Identity", ["mel"], ["h"], name="first"),
        helper.make_node("NotARealOp", ["h"], ["wav"], name="bad_node"),
    ]
    graph = helper.make_graph(
        nodes,
        "bad",
        [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["batch", CHANNELS, "frames"])],
        [helper.make_tensor_value_info("wav", TensorProto.FLOAT, ["batch", 1, "samples"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
