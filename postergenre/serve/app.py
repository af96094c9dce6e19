"""The FastAPI application of one run folder: predictions, heatmaps, the model's description, a page.

Endpoints (every error is JSON ``{"error": "what was wrong and what to do"}``, with a 4xx status for a
bad request and 503 for heatmaps of a run whose PyTorch model cannot be rebuilt here):

- ``POST /api/predict`` (multipart field ``file``): every genre's probability, threshold and decision,
  with ``latency_ms`` and ``timings`` (milliseconds decoding, on the image, and on OCR and text for a
  model that reads poster text; ``ocr_ms`` is null for an image-only model).
- ``POST /api/explain?genre=G`` (multipart field ``file``): the genre's Grad-CAM over the poster, as PNG.
- ``GET /api/model``: genres, thresholds, backbone, mode and the test metrics of ``RUN/metrics.json``.
- ``GET /healthz``; ``GET /`` (the page); ``GET /docs`` (Swagger UI, served offline) and ``/openapi.json``.

Scoring uses the torch-free :class:`~postergenre.inference.predictor.Predictor`, loaded once; its ONNX
session may run from many threads at once. Heatmaps need the PyTorch model, loaded on the first
``/api/explain`` (importing torch takes seconds) and used by one request at a time: Grad-CAM hooks
a stage of the backbone, and two requests in it at once would collect each other's maps.

Uploads are read from the request stream and refused as soon as they pass the size limit, so a
huge or endless upload costs at most the limit in memory; image headers are checked before any
pixel is decoded (:func:`~postergenre.data.images.open_rgb`), so a decompression bomb costs nothing.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from postergenre.errors import PosterGenreError

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
UPLOAD_FIELD = "file"
DEFAULT_MAX_UPLOAD_MB = 10.0
# Room for the multipart boundaries, part headers and small fields around the poster itself.
FORM_OVERHEAD_BYTES = 64 * 1024
# A client that trickles its upload slower than this holds a connection for nothing.
UPLOAD_TIMEOUT_S = 60.0
# Heatmaps are drawn on the poster scaled to fit this many pixels a side: the network sees a few
# hundred pixels anyway, and a full-size 4000-pixel overlay would take seconds to encode as PNG.
EXPLAIN_MAX_SIDE = 800
METRIC_KEYS = ("macro_roc_auc", "macro_average_precision", "micro_roc_auc", "n_samples")
IMAGE_HINT = "choose a poster image (JPEG, PNG or WebP)"
# The page loads nothing from elsewhere; the browser is told to refuse it if it ever tried.
PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'"


class ApiError(Exception):
    """A request the service refuses: an HTTP status and a message saying what to do."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class UploadTooLarge(Exception):
    """Raised from inside the multipart parser the moment the poster passes the limit."""


# ---- reading the upload ----------------------------------------------------------------------


@dataclass
class Upload:
    """The bytes of the poster field of a multipart form, and the file name the client gave."""

    data: bytes
    filename: str


@dataclass
class _FieldCollector:
    """Multipart parser callbacks that keep one field's bytes and refuse them past ``limit``."""

    name: str
    limit: int
    found: bool = False
    ended: bool = False
    filename: str = ""
    data: bytearray = field(default_factory=bytearray)
    _in_field: bool = False
    _headers: dict = field(default_factory=dict)
    _header: list = field(default_factory=lambda: [bytearray(), bytearray()])

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._header[0].extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header[1].extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers, self._in_field = {}, False

    def _header_end(self) -> None:
        self._headers[bytes(self._header[0]).strip().lower()] = bytes(self._header[1]).strip()
        self._header = [bytearray(), bytearray()]

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        # Only the first part of that name counts; later ones are parsed and dropped.
        self._in_field = options.get(b"name") == self.name.encode() and not self.found
        if self._in_field:
            self.found = True
            self.filename = _display_name(options.get(b"filename", b""))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_field:
            self.data.extend(data[start:end])
            if len(self.data) > self.limit:
                raise UploadTooLarge

    def _part_end(self) -> None:
        self._in_field = False

    def _end(self) -> None:
        self.ended = True


def _display_name(raw: bytes) -> str:
    """The client's file name, safe to repeat in a message: its last path part, at most 80 characters."""
    name = raw.decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable())
    return name[:80] or "the upload"


async def read_upload(request: Request, limit: int) -> Upload:
    """The ``file`` field of a multipart request, read as it streams in and cut off past ``limit`` bytes."""
    boundary = _multipart_boundary(request.headers.get("content-type", ""))
    too_large = ApiError(
        413,
        f"the upload is over the limit of {_megabytes(limit)}; send a smaller poster "
        "(a few hundred pixels a side is all the model uses)",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + FORM_OVERHEAD_BYTES:
        raise too_large  # refused before reading a byte of the body
    collector = _FieldCollector(UPLOAD_FIELD, limit)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        await _feed(request, parser, limit + FORM_OVERHEAD_BYTES)
        parser.finalize()
    except UploadTooLarge:
        raise too_large from None
    except FormParserError as exc:
        raise ApiError(
            400, f"the multipart form is malformed ({exc}); send the poster as field '{UPLOAD_FIELD}'"
        ) from exc
    return _collected_upload(collector)


async def _feed(request: Request, parser, max_bytes: int) -> None:
    """Pass the body to the parser chunk by chunk; stop at ``max_bytes`` or after the upload timeout."""
    from starlette.requests import ClientDisconnect

    received = 0
    try:
        with anyio.fail_after(UPLOAD_TIMEOUT_S):
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_bytes:
                    raise UploadTooLarge
                parser.write(chunk)
    except TimeoutError as exc:
        raise ApiError(408, f"the upload took longer than {UPLOAD_TIMEOUT_S:.0f} s; try again") from exc
    except ClientDisconnect as exc:  # nobody will read the answer; keep it out of the error log
        raise ApiError(400, "the client disconnected during the upload") from exc


def _multipart_boundary(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        got = kind.decode("latin-1") or "no content type"
        raise ApiError(
            415, f"expected a multipart/form-data upload with the poster in field '{UPLOAD_FIELD}', got {got}"
        )
    if not options.get(b"boundary"):
        raise ApiError(400, "the multipart/form-data content type has no boundary; let the HTTP client build the form")
    return options[b"boundary"]


def _collected_upload(collector: _FieldCollector) -> Upload:
    if not collector.found:
        raise ApiError(
            422,
            f"no '{UPLOAD_FIELD}' field in the form; send the poster as multipart field '{UPLOAD_FIELD}' "
            f"(curl -F {UPLOAD_FIELD}=@poster.jpg)",
        )
    if not collector.ended:
        raise ApiError(400, "the upload ended before the end of the multipart form; send the whole file again")
    return Upload(bytes(collector.data), collector.filename)


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:g} MB"


# ---- decoding the poster ---------------------------------------------------------------------


def decode_poster(upload: Upload, draft: tuple[int, int] | None = None) -> Image.Image:
    """The upload as an RGB image; anything else is an :class:`ApiError` naming the file.

    ``draft``: decode a large JPEG at a reduced scale, as feature extraction does (for scoring).
    """
    from postergenre.data.images import ImageError, open_rgb

    if not upload.data:
        raise ApiError(400, f"{upload.filename}: the file is empty (0 bytes); {IMAGE_HINT}")
    try:
        return open_rgb(io.BytesIO(upload.data), name=upload.filename, draft=draft)
    except ImageError as exc:
        raise ApiError(_image_error_status(exc), str(exc)) from exc


def _image_error_status(error: Exception) -> int:
    """415 for a file that is no image at all, 413 for one with too many pixels, else 400 (corrupt)."""
    cause = error.__cause__
    if isinstance(cause, Image.UnidentifiedImageError):
        return 415
    # open_rgb raises the pixel-count refusal itself (no cause); PIL's own bomb check is the other.
    if cause is None or isinstance(cause, Image.DecompressionBombError):
        return 413
    return 400


# ---- the model -------------------------------------------------------------------------------


class ModelService:
    """A run folder's model: scoring with the ONNX predictor, heatmaps with the PyTorch classifier."""

    def __init__(self, run_dir: Path, predictor):
        self.run_dir = run_dir
        self.predictor = predictor
        self.info = predictor.model.info
        self.metrics = read_metrics(run_dir)
        self._classifier = None
        self._classifier_error: str | None = None
        self._explain_lock = threading.Lock()

    @property
    def genres(self) -> list[str]:
        return self.predictor.genres

    @property
    def name(self) -> str:
        return str(self.info.get("name") or self.run_dir.resolve().name)

    def describe(self) -> dict:
        preprocessing = self.info.get("preprocessing", {})
        return {
            "name": self.name,
            "backbone": self.info.get("backbone"),
            "mode": self.info.get("mode"),
            "head": self.info.get("head", {}).get("type"),
            "flip": bool(self.info.get("flip", False)),
            "text": (self.info.get("text") or {}).get("fusion"),  # None, "concat" or "late"
            "input_size": preprocessing.get("input_size"),
            "resize": preprocessing.get("resize"),
            "genres": self.genres,
            "thresholds": [float(t) for t in self.predictor.thresholds],
            "metrics": self.metrics,
        }

    @property
    def draft(self) -> tuple[int, int]:
        from postergenre.features.extract import draft_size

        # An ensemble's posters decode once, at the largest draft any of its backbones needs.
        # TODO: decode once per backbone, as feature extraction does, if their drafts ever give
        # different scores (the drafts of the registered backbones differ by at most one JPEG scale).
        sizes = [draft_size(member.preprocessing) for member in self.predictor.members]
        return max(sizes, key=lambda size: size[0] * size[1])

    def probabilities(self, image: Image.Image, full_image: Image.Image | None = None) -> np.ndarray:
        """Every genre's probability for one poster, as ``postergenre predict`` computes it.

        A text model reads the text of ``full_image`` (the poster at full resolution, as OCR saw it
        in training), or of ``image`` when none is given.
        """
        return self.score(image, full_image)[0]

    def score(self, image: Image.Image, full_image: Image.Image | None = None) -> tuple[np.ndarray, dict]:
        """(probabilities, milliseconds spent on the image part and, for a text model, on OCR and text)."""
        started = time.perf_counter()
        features = self.predictor.image_features(image)
        timings = {"image_ms": _milliseconds(started), "ocr_ms": None}
        text = None
        if self.predictor.uses_text:
            started = time.perf_counter()
            text = self.predictor.text_features_of_image(full_image if full_image is not None else image)
            timings["ocr_ms"] = _milliseconds(started)
        return self.predictor.model.probabilities(features, text)[0], timings

    def score_upload(self, upload: Upload) -> tuple[np.ndarray, dict]:
        """Score an upload decoded the way training decoded it: drafted for the backbone, whole for OCR."""
        started = time.perf_counter()
        image = decode_poster(upload, draft=self.draft)
        full_image = decode_poster(upload) if self.predictor.uses_text else None
        decoding = _milliseconds(started)
        probabilities, timings = self.score(image, full_image)
        return probabilities, {"decode_ms": decoding, **timings}

    def prediction(self, probabilities: np.ndarray) -> dict:
        rows = [
            {"genre": genre, "probability": float(p), "threshold": float(t), "predicted": bool(p >= t)}
            for genre, p, t in zip(self.genres, probabilities, self.predictor.thresholds, strict=True)
        ]
        return {
            "model": {"name": self.name, "backbone": self.info.get("backbone")},
            "genres": rows,
            "predicted": [row["genre"] for row in rows if row["predicted"]],
        }

    def genre_index(self, genre: str | None) -> int:
        """The position of a genre name (any case); a missing or unknown one lists the valid names."""
        choices = ", ".join(self.genres)
        if not genre:
            raise ApiError(422, f"missing query parameter 'genre'; add ?genre=G with G one of: {choices}")
        by_name = {g.casefold(): k for k, g in enumerate(self.genres)}
        if genre.casefold() not in by_name:
            raise ApiError(422, f"unknown genre {genre[:80]!r}; this model's genres are: {choices}")
        return by_name[genre.casefold()]

    def explain(self, image: Image.Image, index: int):
        """(overlay picture, the genre's Grad-CAM, the explanation) for one genre of one poster."""
        from postergenre.explain.gradcam import explain_image
        from postergenre.explain.render import overlay

        image = fit_within(image, EXPLAIN_MAX_SIDE)
        with self._explain_lock:
            explanation = explain_image(self._load_classifier(), image, [index])
        cam = explanation.cams[0]
        return overlay(image, cam.heatmap), cam, explanation

    def _load_classifier(self):
        """The PyTorch classifier, built on first use; a run that cannot be rebuilt answers 503 every time."""
        if self._classifier is None and self._classifier_error is None:
            self._classifier, self._classifier_error = _build_classifier(self.run_dir, self.genres)
        if self._classifier_error is not None:
            raise ApiError(503, self._classifier_error)
        return self._classifier


def _milliseconds(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _build_classifier(run_dir: Path, genres: list[str]):
    from postergenre.explain import choices
    from postergenre.inference.predictor import SavedModel

    if (SavedModel.load(run_dir).text or {}).get("fusion") == "concat":
        return None, "heatmaps are unavailable: this model's head reads image and text features together"
    started = time.perf_counter()
    try:
        classifier = choices.load_run(run_dir)
    # Anything that stops the PyTorch model from being rebuilt (a backbone missing from this
    # install, weights that cannot be found) must leave prediction working.
    except Exception as exc:
        logger.exception("cannot build the heatmap model of %s", run_dir)
        return None, f"heatmaps are unavailable for this run: {exc}; predictions still work"
    if list(classifier.genres) != list(genres):
        return (
            None,
            "heatmaps are unavailable: the PyTorch model's genres differ from model.json's; train the run again",
        )
    logger.info("heatmap model of %s loaded in %.1f s", run_dir, time.perf_counter() - started)
    return classifier, None


def fit_within(image: Image.Image, max_side: int) -> Image.Image:
    """The image scaled down (never up) so that neither side exceeds ``max_side``."""
    scale = max_side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # Light compression: several times faster to write than the default, a little larger.
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def read_metrics(run_dir: Path) -> dict | None:
    """The test metrics summary of ``RUN/metrics.json``, or None when the run has none (or it is unreadable)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        logger.warning("%s: cannot read the test metrics (%s); /api/model will show none", path, exc)
        return None
    return {key: metrics.get(key) for key in METRIC_KEYS}


# ---- the application -------------------------------------------------------------------------


def create_app(run_dir: str | Path, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> FastAPI:
    """The web service of a run folder (see the module docstring); the model is loaded here, once."""
    from postergenre.inference.predictor import Predictor

    if not max_upload_mb > 0:
        raise PosterGenreError(f"--max-upload-mb must be more than 0, got {max_upload_mb}")
    run_dir = Path(run_dir)
    # open_rgb refuses images over its pixel limit itself, with a message for the client; PIL's
    # warning about the same images would only fill the server's log.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    service = ModelService(run_dir, Predictor.load(run_dir))
    warm_up(service)
    limit = int(max_upload_mb * 2**20)

    app = FastAPI(
        title="postergenre",
        summary="Predict a movie's genres from its poster.",
        description=f"Model **{service.name}** ({service.info.get('backbone')}); uploads up to {max_upload_mb:g} MB.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.service, app.state.max_upload_bytes = service, limit
    add_error_handlers(app)
    add_api_routes(app, service, limit)
    add_page_routes(app, max_upload_mb)
    return app


def warm_up(service: ModelService) -> None:
    """Decode and score one blank poster, so that the first user does not pay for ONNX Runtime's first-run
    set-up and PIL's loading of its format plugins."""
    height, width = service.predictor.preprocessing.input_size
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (128, 128, 128)).save(buffer, format="JPEG")
    # A text model's OCR engine and sentence model load in seconds: here, not on the first request.
    service.predictor.warm_up_text()
    service.probabilities(decode_poster(Upload(buffer.getvalue(), "warm-up.jpg")))


UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {UPLOAD_FIELD: {"type": "string", "format": "binary", "description": "the poster"}},
                "required": [UPLOAD_FIELD],
            }
        }
    },
}
ERROR_RESPONSES = {
    code: {
        "description": text,
        "content": {"application/json": {"example": {"error": "what was wrong and what to do"}}},
    }
    for code, text in {
        400: "empty, truncated or corrupt image; malformed form",
        413: "upload over the size limit, or an image with too many pixels",
        415: "not an image, or not a multipart upload",
        422: "no 'file' field; missing or unknown genre",
    }.items()
}


def add_api_routes(app: FastAPI, service: ModelService, limit: int) -> None:
    @app.get("/healthz", summary="Liveness check")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/api/model", summary="The model: genres, thresholds, backbone, mode and test metrics")
    def model() -> dict:
        return {**service.describe(), "max_upload_mb": limit / 2**20}

    @app.post(
        "/api/predict",
        summary="Every genre's probability for a poster",
        description=f"Upload the poster as multipart field `{UPLOAD_FIELD}`. A genre is predicted when its "
        "probability reaches its threshold (tuned on the run's validation split).",
        openapi_extra={"requestBody": UPLOAD_BODY},
        responses=ERROR_RESPONSES,
    )
    async def predict(request: Request) -> dict:
        started = time.perf_counter()
        upload = await read_upload(request, limit)
        # Decoded the way training decoded it, so that a poster scores the same here as in evaluation.
        probabilities, timings = await run_in_threadpool(service.score_upload, upload)
        result = service.prediction(probabilities)
        return {**result, "latency_ms": _milliseconds(started), "timings": timings}

    @app.post(
        "/api/explain",
        summary="A genre's Grad-CAM heatmap over the poster (PNG)",
        description=f"Upload the poster as multipart field `{UPLOAD_FIELD}`. The first call loads the PyTorch "
        "model and takes a few seconds. Headers X-Genre, X-Probability, X-Threshold, X-Layer, X-Evidence "
        "(found, or none when the map is empty) and X-Notes (how to read it) describe the map.",
        openapi_extra={"requestBody": UPLOAD_BODY},
        responses={200: {"content": {"image/png": {}}, "description": "the heatmap over the poster"}}
        | ERROR_RESPONSES
        | {503: {"description": "the run's PyTorch model cannot be rebuilt here"}},
        response_class=Response,
    )
    async def explain(request: Request, genre: str | None = Query(None, description="a genre of the model")):
        index = service.genre_index(genre)
        upload = await read_upload(request, limit)
        picture, cam, explanation = await run_in_threadpool(lambda: service.explain(decode_poster(upload), index))
        png = await run_in_threadpool(encode_png, picture)
        headers = {
            "X-Genre": cam.genre,
            "X-Probability": f"{cam.probability:.6f}",
            "X-Threshold": f"{cam.threshold:.6f}",
            "X-Layer": f"{explanation.backbone}:{explanation.layer}",
            # Grad-CAM keeps only positive evidence: an all-zero map means none was found, not an error.
            "X-Evidence": "found" if float(cam.heatmap.max()) > 0 else "none",
            # What a reader must know to read the map right (a centre crop leaves the poster's ends cold).
            "X-Notes": " ".join(explanation.notes).encode("ascii", "replace").decode(),
            "Cache-Control": "no-store",
        }
        return Response(png, media_type="image/png", headers=headers)


def add_page_routes(app: FastAPI, max_upload_mb: float) -> None:
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

    add_docs_route(app)


def add_docs_route(app: FastAPI) -> None:
    """Swagger UI at /docs from the assets that the fastapi-offline package ships, so it works offline."""
    from fastapi.openapi.docs import get_swagger_ui_html

    assets = swagger_assets_dir()
    if assets is not None:
        app.mount("/static-docs", StaticFiles(directory=assets), name="docs-assets")
        urls = {"swagger_js_url": "/static-docs/swagger-ui-bundle.js", "swagger_css_url": "/static-docs/swagger-ui.css"}
        urls["swagger_favicon_url"] = "/static-docs/favicon.png"
    else:
        # TODO: vendor Swagger UI if fastapi-offline goes away; until then /openapi.json always works.
        logger.warning("fastapi-offline is not installed: /docs loads Swagger UI from a CDN (needs the internet)")
        urls = {}

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="postergenre - API", **urls)


def swagger_assets_dir() -> Path | None:
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def add_error_handlers(app: FastAPI) -> None:
    """Every refusal as ``{"error": ...}``, whichever layer made it."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        logger.info("%s %s -> %d: %s", request.method, request.url.path, exc.status, exc.message)
        return error_response(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors())
        return error_response(422, f"invalid request ({problems}); see /docs")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no such page: {request.url.path}; the API is /api/predict, /api/explain, /api/model (see /docs)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs"
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}: {exc}); see the server's log")


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)
