"""The OCR models with their element-wise chains fused: same outputs, fewer operators, cached once."""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("rapidocr_onnxruntime", reason="needs the text extra: pip install 'postergenre[text]'")

import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from onnx import numpy_helper as nh

from postergenre.text import ocr_models
from postergenre.text.ocr_models import fuse_graph, fused_session


def _scalar(name: str, value: float, shape: tuple[int, ...] = (1,)):
    return helper.make_node("Constant", [], [name], value=nh.from_array(np.full(shape, value, np.float32)))


def _graph(*, branch: bool = False) -> onnx.ModelProto:
    """input -> Conv -> Mul(1.7) -> Add(-0.3) -> x * clip(x + 3, 0, 6) / 6 -> output.

    ``branch``: the Conv's output is also an output of the graph, so its scale must stay apart.
    """
    rng = np.random.default_rng(0)
    weight = nh.from_array(rng.normal(size=(5, 3, 3, 3)).astype(np.float32), "w")
    bias = nh.from_array(rng.normal(size=5).astype(np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        _scalar("scale", 1.7),
        helper.make_node("Mul", ["conv", "scale"], ["scaled"]),
        _scalar("shift", -0.3),
        helper.make_node("Add", ["scaled", "shift"], ["x"]),
        _scalar("three", 3.0),
        helper.make_node("Add", ["x", "three"], ["x3"]),
        _scalar("zero", 0.0, shape=()),  # Clip's bounds are rank 0
        _scalar("six", 6.0, shape=()),
        helper.make_node("Clip", ["x3", "zero", "six"], ["clipped"]),
        helper.make_node("Mul", ["x", "clipped"], ["gated"]),
        helper.make_node("Div", ["gated", "six"], ["output"]),
    ]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 5, 8, 6])]
    if branch:
        outputs.append(helper.make_tensor_value_info("conv", TensorProto.FLOAT, [1, 5, 8, 6]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 6])],
        outputs,
        initializer=[weight, bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])


def _run(model: onnx.ModelProto, inputs: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": inputs})


def test_fuse_graph_folds_the_scale_and_writes_hard_swish_with_the_same_outputs():
    """Check Conv -> Mul -> Add becomes one Conv, the hard-swish chain becomes HardSigmoid and Mul,
    and the rewritten graph gives the original's outputs."""
    model = _graph()
    inputs = np.random.default_rng(1).normal(size=(1, 3, 8, 6)).astype(np.float32) * 3
    expected = _run(model, inputs)

    counts = fuse_graph(model)

    assert counts == {"conv_scale_shift": 1, "hard_swish": 1}
    onnx.checker.check_model(model)
    assert [node.op_type for node in model.graph.node] == ["Conv", "HardSigmoid", "Mul"]
    np.testing.assert_allclose(_run(model, inputs)[0], expected[0], atol=1e-5)


def test_fuse_graph_leaves_a_convolution_whose_output_is_also_used_elsewhere():
    """Check a Conv output that the graph also returns keeps its scale and shift apart (both outputs
    stay right), while the hard-swish is still rewritten."""
    model = _graph(branch=True)
    inputs = np.random.default_rng(2).normal(size=(1, 3, 8, 6)).astype(np.float32)
    expected = _run(model, inputs)

    counts = fuse_graph(model)

    assert counts == {"conv_scale_shift": 0, "hard_swish": 1}
    for actual, wanted in zip(_run(model, inputs), expected, strict=True):
        np.testing.assert_allclose(actual, wanted, atol=1e-5)


@pytest.fixture(scope="module")
def engine():
    from postergenre.text.ocr import OcrEngine, OcrSettings

    return OcrEngine(OcrSettings(fuse=False), threads=1)


@pytest.mark.parametrize("kind", ["det", "rec"])
def test_the_shipped_models_fuse_and_agree_with_the_originals(kind, engine, tmp_path, caplog):
    """Check each of rapidocr's models fuses into the cache, runs with fewer nodes, gives the
    original's outputs within tolerance, and is reused (not rewritten) the second time."""
    infer = engine.ocr.text_det.infer if kind == "det" else engine.ocr.text_rec.session

    with caplog.at_level(logging.INFO, logger="postergenre.text.ocr_models"):
        session = fused_session(infer, kind, tmp_path)
    assert session is not infer.session
    (path,) = (tmp_path / "onnx").glob("*-fused*.onnx")
    assert "fused" in caplog.text
    assert len(onnx.load(str(path)).graph.node) < len(onnx.load(infer.session._model_path).graph.node)
    assert ocr_models.max_difference(infer.session, session, ocr_models.CHECK_SHAPES[kind]) < 1e-3

    caplog.clear()
    mtime = path.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="postergenre.text.ocr_models"):
        fused_session(infer, kind, tmp_path)
    assert path.stat().st_mtime_ns == mtime and "fused" not in caplog.text


def test_a_fused_model_that_disagrees_falls_back_to_the_shipped_one(engine, tmp_path, monkeypatch, caplog):
    """Check a fused model failing the parity check is thrown away, with a warning, and the
    original session is used."""
    monkeypatch.setattr(ocr_models, "PARITY_TOLERANCE", -1.0)
    infer = engine.ocr.text_rec.session

    with caplog.at_level(logging.WARNING, logger="postergenre.text.ocr_models"):
        session = fused_session(infer, "rec", tmp_path)

    assert session is infer.session
    assert "as shipped" in caplog.text and "differ" in caplog.text
    assert not list((tmp_path / "onnx").glob("*.onnx"))


def test_fused_and_shipped_models_read_the_same_poster_text(tmp_path):
    """Check OCR with the fused models reads exactly the lines (text and boxes) the shipped ones read."""
    from test_text import write_text_poster

    from postergenre.text.ocr import OcrEngine, OcrSettings, load_bgr

    write_text_poster(tmp_path / "word.jpg", "NIGHTMARE")
    image = load_bgr(tmp_path / "word.jpg")
    fused = OcrEngine(OcrSettings(), threads=1).read(image)
    shipped = OcrEngine(OcrSettings(fuse=False), threads=1).read(image)

    assert any("NIGHTMARE" in line.text.upper() for line in fused), fused
    assert [(line.text, line.box) for line in fused] == [(line.text, line.box) for line in shipped]
