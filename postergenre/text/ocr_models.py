"""RapidOCR's detector and recogniser with their chains of element-wise operators fused.

The PP-OCRv4 models were converted from PaddlePaddle operator by operator, and ONNX Runtime does
not fuse what the converter spelt out: each convolution is followed by a scalar scale and shift
(``Mul``, ``Add``: the networks' learnable affine blocks), and each hard-swish is written as
``x * clip(x + 3, 0, 6) / 6`` (``Add``, ``Clip``, ``Mul``, ``Div``). On one core these element-wise
passes took 43% of the recogniser's time. :func:`fuse_graph` folds the scale and shift into the
convolution's weights and bias and writes hard-swish as ``x * HardSigmoid(x)``. Measured on one
thread: the recogniser on 300 crops of the shared posters, 15.0 -> 10.9 ms a crop, the same
characters read (largest change of a recogniser probability 2.5e-4); the detector on a 416x288
input, 24 -> 19 ms.

The fused copies are written once to the cache folder, keyed by the original file's digest, and
checked against the original before first use; a model that fails the check (or that the rewrite
does not understand) runs as the package ships it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# Bump when the rewrite changes, so that older fused files are not reused. Part of the OCR cache key.
FUSION_VERSION = 1
# Largest |fused - original| accepted on the check input, on outputs that are probabilities in [0, 1].
PARITY_TOLERANCE = 1e-3
# Inputs the check runs (batch, channels, height, width): a poster-sized image for the detector and
# one text line at the recogniser's height.
CHECK_SHAPES = {"det": (1, 3, 416, 288), "rec": (1, 3, 48, 256)}


def fuse_graph(model) -> dict[str, int]:
    """Rewrite an ``onnx.ModelProto`` in place; returns how many of each pattern were fused.

    - ``Conv -> Mul(s) -> Add(b)`` with scalar constants ``s`` and ``b`` (the add is optional)
      becomes one ``Conv`` with weights ``s * W`` and bias ``s * B + b``;
    - ``Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6)`` becomes ``Mul(x, HardSigmoid(x; 1/6, 1/2))``.

    Only nodes whose intermediate outputs have no other consumer are touched, so the rewritten
    graph computes the same function up to rounding.
    """
    from onnx import helper
    from onnx import numpy_helper as nh

    graph = model.graph
    constants = {
        node.output[0]: nh.to_array(node.attribute[0].t)
        for node in graph.node
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value"
    }
    constants.update({i.name: nh.to_array(i) for i in graph.initializer})
    consumers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    graph_outputs = {output.name for output in graph.output}

    def sole_consumer(name: str, op_type: str):
        """The one node that reads ``name``, if it is of ``op_type`` and nothing else reads it."""
        if name in graph_outputs:
            return None
        users = consumers[name]
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    def scalar_operand(node, x: str) -> float | None:
        """The node's other operand, if it is a one-element constant."""
        others = [name for name in node.input if name != x]
        if len(others) != 1 or others[0] not in constants or constants[others[0]].size != 1:
            return None
        return float(constants[others[0]].reshape(()))

    removed, renamed = set(), {}
    added, counts = [], {"conv_scale_shift": 0, "hard_swish": 0}
    for node in list(graph.node):
        if node.op_type == "Conv" and node.input[1] in constants:
            mul = sole_consumer(node.output[0], "Mul")
            scale = scalar_operand(mul, node.output[0]) if mul is not None else None
            if scale is None:
                continue
            add = sole_consumer(mul.output[0], "Add")
            shift = scalar_operand(add, mul.output[0]) if add is not None else None
            weight = constants[node.input[1]]
            bias = constants.get(node.input[2]) if len(node.input) > 2 else np.zeros(weight.shape[0], weight.dtype)
            if bias is None:
                continue
            names = (f"{node.name}_fused_weight", f"{node.name}_fused_bias")
            graph.initializer.extend(
                [
                    nh.from_array((weight * scale).astype(weight.dtype), names[0]),
                    nh.from_array((bias * scale + (shift or 0.0)).astype(weight.dtype), names[1]),
                ]
            )
            node.input[:] = [node.input[0], *names]
            last = add if shift is not None else mul
            removed.update({id(mul), id(last)})
            renamed[last.output[0]] = node.output[0]
            counts["conv_scale_shift"] += 1
        elif node.op_type == "Add":
            chain = _hard_swish_chain(node, constants, sole_consumer, scalar_operand)
            if chain is None:
                continue
            x, clip, mul, div = chain
            gate = f"{node.name}_hard_sigmoid"
            added += [
                helper.make_node("HardSigmoid", [x], [gate], alpha=1 / 6, beta=0.5, name=gate),
                helper.make_node("Mul", [x, gate], [div.output[0]], name=f"{node.name}_hard_swish"),
            ]
            removed.update({id(node), id(clip), id(mul), id(div)})
            counts["hard_swish"] += 1

    kept = [node for node in graph.node if id(node) not in removed] + added
    for node in kept:
        node.input[:] = [_resolve(name, renamed) for name in node.input]
    used = {name for node in kept for name in node.input} | graph_outputs
    kept = [node for node in kept if node.op_type != "Constant" or node.output[0] in used]
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    del graph.node[:]
    graph.node.extend(_topological(kept, {i.name for i in graph.input} | {i.name for i in graph.initializer}))
    return counts


def _hard_swish_chain(add, constants, sole_consumer, scalar_operand):
    """``(x, clip, mul, div)`` when ``add`` starts ``x * clip(x + 3, 0, 6) / 6``, else None."""
    variables = [name for name in add.input if name not in constants]
    if len(variables) != 1 or scalar_operand(add, variables[0]) != 3.0:
        return None
    x = variables[0]
    clip = sole_consumer(add.output[0], "Clip")
    if clip is None or len(clip.input) != 3 or any(name not in constants for name in clip.input[1:]):
        return None
    if [float(constants[name].reshape(())) for name in clip.input[1:]] != [0.0, 6.0]:
        return None
    mul = sole_consumer(clip.output[0], "Mul")
    if mul is None or sorted(mul.input) != sorted([x, clip.output[0]]):
        return None
    div = sole_consumer(mul.output[0], "Div")
    if div is None or scalar_operand(div, mul.output[0]) != 6.0:
        return None
    return x, clip, mul, div


def _resolve(name: str, renamed: dict[str, str]) -> str:
    while name in renamed:
        name = renamed[name]
    return name


def _topological(nodes: list, available: set[str]) -> list:
    """``nodes`` in an order where each comes after the producers of its inputs (ONNX requires it)."""
    available = set(available) | {""}
    ordered, pending = [], list(nodes)
    while pending:
        ready = [node for node in pending if all(name in available for name in node.input)]
        if not ready:
            raise ValueError("the rewritten graph has a cycle or a dangling input")
        for node in ready:
            available.update(node.output)
        ordered += ready
        ready_ids = {id(node) for node in ready}
        pending = [node for node in pending if id(node) not in ready_ids]
    return ordered


def fused_path(original: Path, cache_root: Path) -> Path:
    """Where the fused copy of ``original`` lives: named after its content, so a new model is a new file."""
    digest = hashlib.sha256(Path(original).read_bytes()).hexdigest()[:16]
    return Path(cache_root) / "onnx" / f"{Path(original).stem}-{digest}-fused{FUSION_VERSION}.onnx"


def write_fused(original: Path, path: Path) -> dict[str, int]:
    """Fuse ``original`` into ``path`` (written under a temporary name, then moved into place)."""
    import onnx

    model = onnx.load(str(original))
    counts = fuse_graph(model)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return counts


def max_difference(original_session, fused_session, shape: tuple[int, ...]) -> float:
    """The largest |fused - original| over every output, on a fixed input in the models' [-1, 1] range."""
    inputs = np.random.default_rng(0).uniform(-1, 1, size=shape).astype(np.float32)
    name = original_session.get_inputs()[0].name
    expected = original_session.run(None, {name: inputs})
    actual = fused_session.run(None, {name: inputs})
    return max(float(np.abs(a - e).max()) for a, e in zip(actual, expected, strict=True))


def fused_session(infer, kind: str, cache_root: Path):
    """An ONNX Runtime session on the fused copy of the model that rapidocr's ``infer`` runs, with
    the same options; ``infer.session`` itself when fusing fails or changes the outputs."""
    import onnxruntime as ort

    original = infer.session
    path = None
    try:
        # The private attributes of onnxruntime's Python session: where rapidocr loaded the model
        # from, and with which options (threads).
        source = Path(original._model_path)
        path = fused_path(source, cache_root)
        fresh = not path.is_file()
        if fresh:
            counts = write_fused(source, path)
            logger.info("fused %s (once): %s -> %s", source.name, counts, path)
        options, providers = original._sess_options, original.get_providers()
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        if fresh:
            difference = max_difference(original, session, CHECK_SHAPES[kind])
            if difference > PARITY_TOLERANCE:
                raise ValueError(f"outputs differ from the original's by {difference:.2g} (over {PARITY_TOLERANCE})")
    except Exception as exc:  # A model this rewrite does not understand still runs as shipped.
        logger.warning("OCR runs its %s model as shipped: fusing it failed (%s)", kind, exc)
        if path is not None:
            path.unlink(missing_ok=True)
        return original
    return session
