"""The web service: every endpoint's answer, bad uploads refused with JSON errors, the serve command."""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
import socket
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'postergenre[serve]')")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (the dev extra)")
from fastapi.testclient import TestClient

from postergenre.serve.app import FORM_OVERHEAD_BYTES, create_app

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Western"]
THRESHOLDS = [0.3, 0.4, 0.5, 0.5, 0.6, 0.7, 0.2]
REPO = Path(__file__).resolve().parents[1]
METRICS = {"macro_roc_auc": 0.71, "macro_average_precision": 0.42, "micro_roc_auc": 0.8, "n_samples": 120}


def make_run(folder: Path, *, metrics: dict | None = None) -> Path:
    """A run folder: a random linear head over the test double's 12 features, its ONNX backbone, metrics.json."""
    import torch
    from training_doubles import fake_preprocessing, write_fake_onnx

    from postergenre.training.heads import create_head
    from postergenre.training.run import save_model

    folder.mkdir(parents=True)
    torch.manual_seed(0)
    head = create_head("linear", 12, len(GENRES))
    head.set_standardisation(np.random.default_rng(0).normal(0, 0.3, size=(50, 12)))
    info = {
        "name": "tiny-run",
        "mode": "multilabel",
        "head": head.describe(),
        "backbone": "fake",
        "preprocessing": fake_preprocessing().to_dict(),
        "flip": False,
        "genres": GENRES,
        "thresholds": THRESHOLDS,
        "train_prevalence": [0.2] * len(GENRES),
        "text": False,
        "postergenre_version": "0.1.0",
    }
    save_model(folder, head, info)
    write_fake_onnx(folder / "backbone.onnx")
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps({**metrics, "per_genre": []}))
    return folder


def fake_classifier(genres=GENRES, resize: str = "stretch"):
    """A small random CNN with a random head, standing in for the run's PyTorch model in heatmap tests."""
    import torch
    from torch import nn

    from postergenre.explain.classifier import classifier_from_parts
    from postergenre.models.backbones import create_backbone

    torch.manual_seed(0)
    backbone = create_backbone("custom_cnn", pretrained=False).eval()
    head = nn.Linear(backbone.num_features, len(genres))
    with torch.no_grad():  # positive weights over non-negative maps: every genre's heatmap has some heat
        head.weight.abs_()
    preprocessing = backbone.preprocessing.with_policy(resize, input_size=(64, 48))
    return classifier_from_parts(backbone, head, genres, THRESHOLDS[: len(genres)], preprocessing)


def poster_bytes(seed: int = 0, size: tuple[int, int] = (60, 90)) -> bytes:
    """A small JPEG poster, as the bytes a browser would upload."""
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels, with almost no data: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One tiny run folder with test metrics, shared by this module's tests (nothing writes to it)."""
    return make_run(tmp_path_factory.mktemp("serve") / "run", metrics=METRICS)


@pytest.fixture(scope="module")
def explained(run_dir):
    """The run's heatmap model replaced by :func:`fake_classifier`; counts how often it is built."""
    from postergenre.explain import classifier as classifiers

    calls = []
    patch = pytest.MonkeyPatch()
    patch.setattr(classifiers, "load_classifier", lambda run: calls.append(run) or fake_classifier())
    yield calls
    patch.undo()


@pytest.fixture(scope="module")
def client(run_dir, explained) -> TestClient:
    """A test client of the tiny run's service with a 1 MB upload limit."""
    with TestClient(create_app(run_dir, max_upload_mb=1)) as test_client:
        yield test_client


def predict(client, data: bytes, name: str = "poster.jpg", field: str = "file"):
    return client.post("/api/predict", files={field: (name, data, "image/jpeg")})


def assert_error(response, status: int, pattern: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert re.search(pattern, response.json()["error"]), response.json()


# ---- every endpoint ------------------------------------------------------------------------------


def test_healthz(client):
    """Check /healthz answers ok."""
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_model_describes_the_run(client):
    """Check /api/model gives genres, thresholds, backbone, mode, the upload limit and the test metrics."""
    model = client.get("/api/model").json()
    assert model["name"] == "tiny-run" and model["backbone"] == "fake" and model["mode"] == "multilabel"
    assert model["genres"] == GENRES and model["thresholds"] == pytest.approx(THRESHOLDS)
    assert model["metrics"] == METRICS
    assert model["max_upload_mb"] == 1


def test_model_without_metrics(tmp_path):
    """Check a run with no metrics.json (or an unreadable one) is served, with metrics null."""
    run = make_run(tmp_path / "run")
    assert TestClient(create_app(run)).get("/api/model").json()["metrics"] is None
    (run / "metrics.json").write_text("{not json")
    assert TestClient(create_app(run)).get("/api/model").json()["metrics"] is None


def test_predict_equals_the_predictor(client, run_dir, tmp_path):
    """Check /api/predict's probabilities and decisions are those of Predictor on the same file."""
    from postergenre.inference.predictor import Predictor

    data = poster_bytes(3)
    (tmp_path / "p.jpg").write_bytes(data)
    expected = Predictor.load(run_dir).score_paths([tmp_path / "p.jpg"])

    response = predict(client, data)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "tiny-run", "backbone": "fake"}
    assert [g["genre"] for g in body["genres"]] == GENRES
    probabilities = [g["probability"] for g in body["genres"]]
    np.testing.assert_allclose(probabilities, expected.probabilities[0], rtol=1e-6)
    assert [g["threshold"] for g in body["genres"]] == pytest.approx(THRESHOLDS)
    assert [g["predicted"] for g in body["genres"]] == [p >= t for p, t in zip(probabilities, THRESHOLDS, strict=True)]
    assert body["predicted"] == expected.predicted[0]
    assert body["latency_ms"] >= 0


def test_predict_takes_png_and_webp(client):
    """Check posters in PNG and WebP are scored like the JPEG they were made from (same pixels)."""
    image = Image.open(io.BytesIO(poster_bytes(4)))
    answers = []
    for fmt in ("PNG", "WEBP"):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, lossless=True) if fmt == "WEBP" else image.save(buffer, format=fmt)
        answers.append(
            [g["probability"] for g in predict(client, buffer.getvalue(), f"p.{fmt.lower()}").json()["genres"]]
        )
    np.testing.assert_allclose(answers[0], answers[1], rtol=1e-6)


def test_explain_returns_the_heatmap_png(client, explained):
    """Check /api/explain returns a PNG of the poster's size whose headers name the genre (any case) and its numbers."""
    response = client.post("/api/explain", params={"genre": "horror"}, files={"file": ("p.jpg", poster_bytes(1))})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(response.content))
    assert picture.format == "PNG" and picture.size == (60, 90)
    assert response.headers["x-genre"] == "Horror"
    assert 0 < float(response.headers["x-probability"]) < 1
    assert float(response.headers["x-threshold"]) == pytest.approx(0.5)
    assert response.headers["x-layer"] == "custom_cnn:block3"
    assert response.headers["x-evidence"] == "found" and response.headers["x-notes"] == ""
    assert len(explained) == 1  # built on first use, then kept


def test_explain_shrinks_a_large_poster(client):
    """Check a poster larger than the heatmap size comes back scaled to 800 pixels on its long side."""
    response = client.post("/api/explain?genre=Drama", files={"file": ("big.jpg", poster_bytes(2, size=(1000, 1500)))})
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(response.content)).size == (533, 800)


def test_explain_says_how_to_read_a_centre_crop(tmp_path, monkeypatch):
    """Check a model that sees only the centre crop says so in the X-Notes header."""
    from postergenre.explain import classifier as classifiers

    monkeypatch.setattr(classifiers, "load_classifier", lambda run: fake_classifier(resize="center_crop"))
    client = TestClient(create_app(make_run(tmp_path / "run")))
    response = client.post("/api/explain?genre=Action", files={"file": ("p.jpg", poster_bytes(1, size=(60, 120)))})
    assert response.status_code == 200, response.text
    assert "only the centre crop" in response.headers["x-notes"]


def test_concurrent_heatmaps_get_their_own_genre(client):
    """Check heatmap requests made at once each get the map of their own genre, as when made one by one."""
    data = poster_bytes(5)

    def heatmap(genre: str) -> bytes:
        response = client.post("/api/explain", params={"genre": genre}, files={"file": ("p.jpg", data)})
        assert response.status_code == 200, response.text
        return response.content

    alone = {genre: heatmap(genre) for genre in GENRES[:4]}
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(heatmap, GENRES[:4] * 2))
    assert together == [alone[g] for g in GENRES[:4] * 2]
    assert len(set(alone.values())) == 4


def test_concurrent_predictions_match_sequential_ones(client):
    """Check predictions made from 8 threads at once equal the ones made one at a time."""
    posters = [poster_bytes(seed) for seed in range(8)]

    def probabilities(data: bytes) -> list[float]:
        response = predict(client, data)
        assert response.status_code == 200, response.text
        return [g["probability"] for g in response.json()["genres"]]

    alone = [probabilities(p) for p in posters]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(probabilities, posters * 2)) == alone * 2


def test_page_is_served_offline(client):
    """Check / is the page, its script and style are served here, and it forbids loading from elsewhere."""
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)
    for asset in re.findall(r"(?:src|href)=\"(/static/[^\"]+)\"", page.text):
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 1000 and b"https://" not in response.content


def test_docs_use_local_swagger_assets(client):
    """Check /docs loads Swagger UI from this server (not a CDN) and /openapi.json lists the API."""
    pytest.importorskip("fastapi_offline", reason="fastapi-offline (the serve extra) ships Swagger UI's files")
    docs = client.get("/docs").text
    assets = re.findall(r"(?:src|href)=['\"]([^'\"]+)['\"]", docs)
    assert assets and all(a.startswith("/") for a in assets), assets
    assert client.get("/static-docs/swagger-ui-bundle.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/predict", "/api/explain", "/api/model", "/healthz"} <= set(paths)
    schema = paths["/api/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["file"]


# ---- bad input -----------------------------------------------------------------------------------


def truncated_jpeg() -> bytes:
    data = poster_bytes(6, size=(200, 300))
    return data[: len(data) // 2]


BAD_UPLOADS = {
    "non-image": (b"%PDF-1.4 this is not a poster", 415, r"^notes\.pdf: not an image file"),
    "truncated JPEG": (truncated_jpeg(), 400, r"^notes\.pdf: cannot be decoded .*truncated"),
    "zero bytes": (b"", 400, r"^notes\.pdf: the file is empty \(0 bytes\); choose a poster image"),
    "bomb past PIL's limit": (png_declaring(100_000, 100_000), 413, r"too many pixels"),
    "bomb past ours": (png_declaring(8000, 6000), 413, r"declares 8000x6000 pixels, over the limit"),
    "over the upload limit": (b"\xff" * (2**20 + 1), 413, r"over the limit of 1 MB; send a smaller poster"),
}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_is_refused_and_the_next_one_served(client, case):
    """Check each bad upload gets its 4xx and a JSON error saying what to do, and a good poster is scored after."""
    data, status, pattern = BAD_UPLOADS[case]
    assert_error(predict(client, data, "notes.pdf"), status, pattern)
    explain = client.post("/api/explain?genre=Drama", files={"file": ("notes.pdf", data)})
    assert_error(explain, status, pattern)
    assert predict(client, poster_bytes(7)).status_code == 200


def test_upload_limit_is_exact(tmp_path, run_dir):
    """Check a poster of exactly the limit is scored and one byte more is refused (413)."""
    limit = 100 * 1024
    client = TestClient(create_app(run_dir, max_upload_mb=limit / 2**20))
    data = poster_bytes(8)
    padded = data + b"\0" * (limit - len(data))  # bytes after a JPEG's end are ignored by decoders
    assert predict(client, padded).status_code == 200
    assert_error(predict(client, padded + b"\0"), 413, r"over the limit of 0\.0976562 MB")


def test_missing_field_and_bad_forms(client):
    """Check a form without 'file', a body that is not a form, and a form without a boundary are refused."""
    assert_error(predict(client, poster_bytes(0), field="poster"), 422, r"no 'file' field in the form; send the poster")
    response = client.post("/api/predict", content=b'{"file": 1}', headers={"content-type": "application/json"})
    assert_error(response, 415, r"expected a multipart/form-data upload .* got application/json")
    response = client.post("/api/predict", content=b"x", headers={"content-type": "multipart/form-data"})
    assert_error(response, 400, r"has no boundary")
    assert_error(client.post("/api/predict"), 415, r"got no content type")
    response = client.post(
        "/api/predict",
        content=b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert_error(response, 400, r"ended before the end of the multipart form")
    assert predict(client, poster_bytes(9)).status_code == 200


def test_unknown_or_missing_genre_lists_the_genres(client):
    """Check /api/explain with an unknown genre, or none, is a 422 listing the model's genres."""
    response = client.post("/api/explain?genre=Musical", files={"file": ("p.jpg", poster_bytes(0))})
    assert_error(response, 422, r"^unknown genre 'Musical'; this model's genres are: Action, Comedy, Drama, .*Western$")
    response = client.post("/api/explain", files={"file": ("p.jpg", poster_bytes(0))})
    assert_error(response, 422, r"^missing query parameter 'genre'; add \?genre=G with G one of: Action, ")


def test_unknown_paths_and_methods_are_json_errors(client):
    """Check a wrong path (404) and a wrong method (405) answer JSON errors pointing to /docs."""
    assert_error(client.get("/api/nothing"), 404, r"no such page: /api/nothing; .* \(see /docs\)")
    assert_error(client.get("/api/predict"), 405, r"GET is not allowed on /api/predict")


def test_run_that_cannot_explain_still_predicts(tmp_path, monkeypatch):
    """Check a run whose PyTorch model cannot be built answers 503 on heatmaps and still predicts."""
    from postergenre.explain import classifier as classifiers

    run = make_run(tmp_path / "run")
    monkeypatch.setattr(classifiers, "load_classifier", lambda run: fake_classifier(GENRES[:3]))
    client = TestClient(create_app(run))
    response = client.post("/api/explain?genre=Drama", files={"file": ("p.jpg", poster_bytes(0))})
    assert_error(response, 503, r"genres differ from model\.json's")
    assert predict(client, poster_bytes(0)).status_code == 200


def _asgi_post(app, receive, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict]:
    """POST /api/predict straight through ASGI with the given body source; (status, JSON body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/predict",
        "raw_path": b"/api/predict",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body)


def test_endless_upload_is_cut_off_at_the_limit(run_dir):
    """Check an upload that never ends is refused (413) after reading about the limit, not all of it."""
    app = create_app(run_dir, max_upload_mb=0.25)
    chunk = 64 * 1024
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n\r\n'
    pulled = []

    async def receive():
        pulled.append(chunk)
        assert len(pulled) < 1000, "the service kept reading"
        return {"type": "http.request", "body": head if len(pulled) == 1 else b"\0" * chunk, "more_body": True}

    status, body = _asgi_post(app, receive, [(b"content-type", b"multipart/form-data; boundary=b")])
    assert status == 413 and "over the limit of 0.25 MB" in body["error"]
    assert sum(pulled) <= 2**18 + 2 * chunk


def test_declared_oversize_body_is_refused_unread(run_dir):
    """Check a Content-Length over the limit is refused without reading any of the body."""
    app = create_app(run_dir, max_upload_mb=1)
    pulled = []

    async def receive():
        pulled.append(1)
        return {"type": "http.request", "body": b"", "more_body": False}

    headers = [
        (b"content-type", b"multipart/form-data; boundary=b"),
        (b"content-length", str(2**20 + FORM_OVERHEAD_BYTES + 1).encode()),
    ]
    status, body = _asgi_post(app, receive, headers)
    assert status == 413 and "over the limit of 1 MB" in body["error"] and not pulled


# ---- the command ---------------------------------------------------------------------------------


def test_serve_without_the_extra_says_how_to_install(monkeypatch, capsys):
    """Check serve without fastapi prints one line with the install hint and exits 2."""
    import importlib.util

    from postergenre.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    assert main(["serve", "somewhere"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: postergenre serve needs fastapi, which is not installed; pip install 'postergenre[serve]'"]


def test_serve_refuses_bad_arguments(run_dir, tmp_path, capsys):
    """Check a missing run, a bad limit, a bad port and a taken port are one-line errors."""
    from postergenre.cli import main

    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: run folder not found" in capsys.readouterr().err
    assert main(["serve", str(run_dir), "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb must be more than 0, got 0.0" in capsys.readouterr().err
    assert main(["serve", str(run_dir), "--port", "70000"]) == 2
    assert "--port must be between 0 and 65535" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", str(run_dir), "--port", str(taken.getsockname()[1])]) == 2
    assert re.search(r"cannot listen on 127\.0\.0\.1:\d+ .*pass another --port", capsys.readouterr().err)


def test_serve_command_answers_and_stops_on_ctrl_c(run_dir):
    """Check `serve RUN --port 0` prints its URL, answers /healthz and a prediction, and exits 0 on Ctrl+C."""
    import httpx

    process = subprocess.Popen(
        [sys.executable, "-m", "postergenre", "-q", "serve", str(run_dir), "--port", "0"],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        match = re.match(r"serving tiny-run at (http://127\.0\.0\.1:\d+/) \(API docs at /docs\); Ctrl\+C to stop", line)
        assert match, (line, process.stderr.read() if process.poll() is not None else "")
        url = match.group(1)
        assert httpx.get(url + "healthz", timeout=30).json() == {"status": "ok"}
        response = httpx.post(url + "api/predict", files={"file": ("p.jpg", poster_bytes(0))}, timeout=30)
        assert response.status_code == 200 and len(response.json()["genres"]) == len(GENRES)
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
    assert code == 0, process.stderr.read()
