"""Is an ONNX export made from a bundle's weights? Checked without torch, each time an export is used.

Threat model. A source install keeps its export in the user's cache, outside the bundle, where no checksum of the
bundle reaches; its record (``model.onnx.json``) names the weights and the export's SHA-256, but whoever can write
the cache can rewrite both consistently (a probe raised p(malignant) from 0.73 to 1.00 by editing the classifier's
bias and the record). So the export is also held to the bundle's verified ``weights.safetensors``, which the
cache cannot change: every tensor in the graph must be one of the bundle's, by name and bit for bit, and every
one of the bundle's parameters must be in the graph (:func:`parameter_problem`, needs the ``onnx`` package); no
node may carry a float table of its own; and on a random input, the graph's logits must be the bundle's linear
head applied to the graph's feature map, and its classifier output the bundle's weights (:func:`head_problem`).
The export writes its parameters unfused for this (ONNX Runtime fuses batch norm into convolutions on loading).

Not covered: rewiring the backbone's operators, or its few scalar constants (padding, clipping bounds), without
changing a parameter. Making sure of that means exporting again with torch (about 2-5 s plus importing torch,
against 0.2 s for a verified cached export); someone who can write the user's cache can usually also write the
source install's Python environment, which no check in it could stop. A failed check makes the backend export
again, so a tampered or stale cache costs one export and never a silent wrong prediction.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

# onnx_export wraps the classifier as ``model``, so each graph tensor is named "model." + its safetensors key.
PARAMETER_PREFIX = "model."
HEAD_WEIGHT = "head.fc.weight"  # busi_viewer.inference.architectures.ImageClassifier's linear head
HEAD_BIAS = "head.fc.bias"
# The exporter's own constants are shapes, pads and scalar bounds; a float table of more entries than this in a
# node can only be a parameter that is not the bundle's.
LARGEST_FLOAT_CONSTANT = 4
# Batch-norm counters never reach a graph.
_NOT_IN_GRAPHS = ("num_batches_tracked",)


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file as NumPy arrays (never unpickled; no torch)."""
    import safetensors.numpy

    return safetensors.numpy.load_file(str(path))


def parameter_problem(onnx_path: Path, weights: Mapping[str, np.ndarray]) -> str | None:
    """Why the graph at ``onnx_path`` holds other parameters than ``weights`` (a bundle's), or None."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own types for a damaged file
        return f"it cannot be read as ONNX ({exc})"
    graph = model.graph
    if model.functions or graph.sparse_initializer:
        return "it holds functions or sparse tensors, which no export of this app has"
    values = {}
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            return f"tensor {tensor.name} is stored outside the file"
        if not tensor.name.startswith(PARAMETER_PREFIX):
            return f"tensor {tensor.name} is not one of the bundle's weights"
        values[tensor.name] = numpy_helper.to_array(tensor)
    for node in graph.node:
        if node.op_type == "Identity" and node.input and node.input[0] in values:
            # The exporter shares equal tensors (several fresh batch norms) through Identity nodes.
            values[node.output[0]] = values[node.input[0]]
        for attribute in node.attribute:
            if _carries_a_table(attribute, numpy_helper):
                return f"node {node.name or node.op_type} carries a table of numbers of its own"
    for name, value in values.items():
        if not name.startswith(PARAMETER_PREFIX):
            continue  # a bundle tensor passed on under another name (the classifier_weight output)
        expected = weights.get(name[len(PARAMETER_PREFIX):])
        if expected is None or value.dtype != expected.dtype or value.shape != expected.shape \
                or value.tobytes() != expected.tobytes():
            return f"tensor {name} differs from the bundle's weights"
    absent = sorted(key for key in weights if not key.endswith(_NOT_IN_GRAPHS)
                    and PARAMETER_PREFIX + key not in values)
    if absent:
        return f"the bundle's {absent[0]} is not in it ({len(absent)} tensors missing)"
    return None


def _carries_a_table(attribute, numpy_helper) -> bool:
    kind = attribute.type
    if kind in (attribute.GRAPH, attribute.GRAPHS, attribute.TENSORS, attribute.SPARSE_TENSOR,
                attribute.SPARSE_TENSORS):
        return True
    if kind == attribute.FLOATS:
        return len(attribute.floats) > LARGEST_FLOAT_CONSTANT
    if kind == attribute.TENSOR:
        value = numpy_helper.to_array(attribute.t)
        return value.dtype.kind in "fc" and value.size > LARGEST_FLOAT_CONSTANT
    return False


def head_problem(logits: np.ndarray, features: np.ndarray, classifier_weight: np.ndarray,
                 weights: Mapping[str, np.ndarray]) -> str | None:
    """Why the graph's outputs on one input are not the bundle's head applied to its feature map, or None.

    ``logits`` (B, K), ``features`` (B, C, h, w) and ``classifier_weight`` (K, C): the export's outputs.
    """
    weight, bias = weights.get(HEAD_WEIGHT), weights.get(HEAD_BIAS)
    if weight is None or bias is None:
        return f"the bundle's weights have no {HEAD_WEIGHT} / {HEAD_BIAS}"
    if classifier_weight.shape != weight.shape or classifier_weight.tobytes() != weight.astype(
            classifier_weight.dtype).tobytes():
        return "its classifier weights are not the bundle's"
    pooled = features.astype(np.float64).mean(axis=(2, 3))
    weight = weight.astype(np.float64)
    expected = pooled @ weight.T + bias.astype(np.float64)
    # Rounding of float32 sums, even in TF32 on a GPU (2^-11 per product), stays below this; a change of the
    # head that moves a probability visibly is orders of magnitude above it.
    bound = 1e-4 + 2e-3 * (np.abs(pooled) @ np.abs(weight).T + np.abs(bias))
    if logits.shape != expected.shape or not np.all(np.abs(logits - expected) <= bound):
        return "its logits are not the bundle's linear head applied to its feature map"
    return None
