"""Reading the text on posters: RapidOCR's bundled PP-OCR models, tuned for throughput.

The package's own pipeline upscales a poster until its shorter side is 736 px before detection,
classifies every crop's orientation and recognises six crops at a time. This module drives its
detector and recogniser itself, as measured on the shared dataset (benchmarks/ocr_throughput.py):

1. detect text boxes on the poster scaled so its longer side is ``det_side`` pixels;
2. skip low-value boxes: shorter than ``min_box_height`` pixels at detection size (fine print),
   and beyond the ``max_boxes`` tallest;
3. crop each box from the full-size poster, not from the rescaled copy;
4. recognise each crop alone at its own width (``rec_width="own"``): the package pads every crop
   to at least 320x48 (a 6.7:1 line), so a typical 4:1 title paid for 60% more width than it has.
   At its own width a crop costs about 21 ms on one core instead of 33, and reads the same words
   (spacing differs now and then: "WHOOPI GOLDBERG" / "WHOOPIGOLDBERG"). Batches do not pay on a
   CPU: sorted by width, batches of 4, 8 and 16 cost 22, 24 and 29 ms a crop.

The defaults trade words for speed. On 200 posters of the shared dataset (longer side at most 400
px), with two single-threaded processes, against the words the package's default pass reads
(vocabulary words of 4+ letters, on 100 of them):

    det_side  min_box_height  max_boxes   CPU s/poster   word recall
    640       16              24          0.289          0.86
    480       12              24          0.198          0.79
    400       10              24          0.158          0.72   (the default caps 12 boxes)
    400       10               6          0.133          0.55
    352        9              10          0.132          0.61
    320       16              24          0.093          0.35
    (the package's own pipeline: 1.07 CPU s/poster, the reference)

Detecting at 400 is the shared set's own size, as in the calibration that measured text's value;
the box floor keeps the same share of the poster's height (10/400 = 16/640). On the whole shared
set, 352/9/10 read and embedded the 7,242 posters in 397 s (about 18 a second, where the 20 a second
target needs less CPU still) and cost late fusion 0.003 validation and 0.006 test macro AUC (0.804
/ 0.782 against 0.807 / 0.788), so 400/10/12 stays the default.

The models themselves run with their element-wise operators fused (``fuse``; see
:mod:`postergenre.text.ocr_models`): 0.084 against 0.110 CPU s a poster at the defaults (400 posters,
two processes, benchmarks/ocr_throughput.py), and the same lines on all 400.

Orientation classification is off: poster text is upright. Each poster is read on its own, so
its lines do not depend on which posters it was processed with, and are cached per poster (see
:func:`ocr_posters`). Throughput comes from one single-threaded process per core.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from postergenre.data.images import ImageError, open_rgb
from postergenre.text.ocr_models import FUSION_VERSION

logger = logging.getLogger(__name__)

OCR_PACKAGE = "rapidocr-onnxruntime"
# Bump when what is stored for a poster changes meaning, so that old records are not reused.
OCR_FORMAT = 1
# Posters per task handed to a worker and per cache write: few enough that an interrupted run
# loses little and the progress bar moves, enough that process round trips cost nothing.
POSTERS_PER_TASK = 8
# Worker processes take ~2 s to start (imports and models); below this many posters per worker
# one process does the job sooner.
MIN_POSTERS_PER_WORKER = 32

# Widths of recogniser inputs are rounded up to this many pixels, so that few distinct shapes reach
# ONNX Runtime; 8 and 32 read the same text at the same speed.
REC_WIDTH_STEP = 8

Point = tuple[float, float]


class TextLine(NamedTuple):
    """One recognised line: its text, the recogniser's confidence in [0, 1], and its box as four
    corners (clockwise from top-left) in the poster's pixel coordinates."""

    text: str
    confidence: float
    box: tuple[Point, Point, Point, Point]


@dataclass(frozen=True)
class OcrSettings:
    """What decides which text is read. Every field is part of the cache key.

    ``det_resize`` says how ``det_side`` sizes the detection input: ``"longest"`` scales the poster
    so its longer side is ``det_side`` (down or up); ``"shortest"`` is the package's own rule,
    upscaling until the shorter side is at least ``det_side``; ``det_side=None`` detects at the
    poster's own size. ``min_box_height`` is in pixels of the detection input, so it means the
    same share of the poster whatever its resolution. Lines recognised with a confidence below
    ``min_score`` are dropped. ``rec_width="own"`` recognises each crop alone at its own width;
    ``"padded"`` is the package's rule (``rec_batch`` crops at a time, padded to the widest and to
    at least 320 pixels). ``fuse`` runs the detector and recogniser with their element-wise
    operators fused (:mod:`postergenre.text.ocr_models`): a quarter less CPU, the same lines.
    """

    det_side: int | None = 400
    det_resize: str = "longest"
    use_cls: bool = False
    min_box_height: float = 10.0
    max_boxes: int | None = 12
    min_score: float = 0.5
    rec_batch: int = 1
    rec_width: str = "own"
    fuse: bool = True

    def __post_init__(self):
        if self.det_resize not in ("longest", "shortest"):
            raise ValueError(f"det_resize must be 'longest' or 'shortest', got {self.det_resize!r}")
        if self.det_side is not None and self.det_side < 32:
            raise ValueError(f"det_side must be at least 32 pixels (None: the poster's own size), got {self.det_side}")
        if self.rec_width not in ("own", "padded"):
            raise ValueError(f"rec_width must be 'own' or 'padded', got {self.rec_width!r}")
        if self.rec_batch < 1:
            raise ValueError(f"rec_batch must be at least 1, got {self.rec_batch}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> OcrSettings:
        return cls(**values)


# ``fast`` is the default; ``reference`` mimics the package's default pipeline (slow, thorough)
# and is what the benchmark measures word recall against.
PRESETS = {
    "fast": OcrSettings(),
    "reference": OcrSettings(
        det_side=736,
        det_resize="shortest",
        use_cls=True,
        min_box_height=0.0,
        max_boxes=None,
        rec_batch=6,
        rec_width="padded",
        fuse=False,
    ),
}


class OcrResults(dict):
    """``{id: [TextLine, ...]}``, plus how many posters came from the cache and how many were read."""

    def __init__(self, lines: dict[str, list[TextLine]], *, n_cached: int, n_computed: int):
        super().__init__(lines)
        self.n_cached = n_cached
        self.n_computed = n_computed


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(OCR_PACKAGE)
    except PackageNotFoundError as exc:
        raise ImportError(
            f"OCR needs the optional package {OCR_PACKAGE}; install it with: pip install 'postergenre[text]'"
        ) from exc


# --- the engine --------------------------------------------------------------------------------


class OcrEngine:
    """RapidOCR's detector, orientation classifier and recogniser, run as the settings say."""

    def __init__(self, settings: OcrSettings, *, threads: int | None = None):
        package_version()  # a clear install hint before the import below fails
        from rapidocr_onnxruntime import RapidOCR

        self.settings = settings
        # -1 lets onnxruntime choose; in worker processes one thread each avoids oversubscription.
        threads = threads or -1
        self.ocr = RapidOCR(use_cls=settings.use_cls, intra_op_num_threads=threads, inter_op_num_threads=1)
        # Images reach the detector already sized by _detect; "max" with a limit of at least 960
        # only rounds them to a multiple of 32 (see rapidocr's TextDetector.get_preprocess).
        self.ocr.text_det.limit_type = "max"
        self.ocr.text_rec.rec_batch_num = settings.rec_batch
        logging.getLogger("RapidOCR").setLevel(logging.WARNING)
        if settings.fuse:
            from postergenre.cache import cache_root
            from postergenre.text.ocr_models import fused_session

            self.ocr.text_det.infer.session = fused_session(self.ocr.text_det.infer, "det", cache_root())
            self.ocr.text_rec.session.session = fused_session(self.ocr.text_rec.session, "rec", cache_root())

    def read(self, image: np.ndarray) -> list[TextLine]:
        """The lines of one BGR poster, in reading order."""
        boxes, scale = self._detect(image)
        boxes = self._select_boxes(boxes, scale)
        return self._lines(boxes, self._recognise(self._crop(image, boxes)))

    def _det_scale(self, height: int, width: int) -> float:
        side = self.settings.det_side
        if side is None:
            return 1.0
        if self.settings.det_resize == "longest":
            return side / max(height, width)
        return max(1.0, side / min(height, width))

    def _detect(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Text boxes, (n, 4, 2) float32 in the image's own pixel coordinates, and the detection scale."""
        import cv2

        height, width = image.shape[:2]
        scale = self._det_scale(height, width)
        resized = image
        if scale != 1.0:
            size = (max(32, round(width * scale)), max(32, round(height * scale)))
            resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        boxes, _ = self.ocr.text_det(resized)
        if boxes is None or len(boxes) == 0:
            return np.zeros((0, 4, 2), np.float32), scale
        boxes = np.asarray(boxes, np.float32)
        boxes[..., 0] *= width / resized.shape[1]
        boxes[..., 1] *= height / resized.shape[0]
        return boxes, scale

    def _select_boxes(self, boxes: np.ndarray, scale: float) -> list[np.ndarray]:
        """Boxes worth recognising, in reading order (top to bottom, then left to right)."""
        heights = scale * np.maximum(
            np.linalg.norm(boxes[:, 0] - boxes[:, 3], axis=1), np.linalg.norm(boxes[:, 1] - boxes[:, 2], axis=1)
        )
        keep = np.flatnonzero(heights >= self.settings.min_box_height)
        if self.settings.max_boxes is not None and len(keep) > self.settings.max_boxes:
            # Title and tagline are the tallest text on a poster; credits and small print go first.
            keep = keep[np.argsort(-heights[keep], kind="stable")[: self.settings.max_boxes]]
        return self.ocr.sorted_boxes(boxes[np.sort(keep)]) if len(keep) else []

    def _crop(self, image: np.ndarray, boxes: list[np.ndarray]) -> list[np.ndarray]:
        if not boxes:
            return []
        crops = self.ocr.get_crop_img_list(image, boxes)
        if self.settings.use_cls:
            crops, _, _ = self.ocr.text_cls(crops)
        return crops

    def _recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        if not crops:
            return []
        if self.settings.rec_width == "own":
            return [self._recognise_own_width(crop) for crop in crops]
        results, _ = self.ocr.text_rec(crops)
        return [(str(result[0]), float(result[1])) for result in results]

    def _recognise_own_width(self, crop: np.ndarray) -> tuple[str, float]:
        """One crop scaled to the recogniser's height, its width rounded up to a multiple of 8."""
        import cv2

        recogniser = self.ocr.text_rec
        _, height, _ = recogniser.rec_image_shape
        ratio = crop.shape[1] / crop.shape[0]
        width = max(REC_WIDTH_STEP, -(-round(height * ratio) // REC_WIDTH_STEP) * REC_WIDTH_STEP)
        # The package's normalisation: [0, 255] to [-1, 1], channels first.
        pixels = cv2.resize(crop, (width, height)).astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
        predictions = recogniser.session(pixels[np.newaxis])[0]
        decoded = recogniser.postprocess_op(predictions, False, wh_ratio_list=[ratio], max_wh_ratio=width / height)
        text, score = decoded[0]
        return str(text), float(score)

    def _lines(self, boxes: list[np.ndarray], texts: list[tuple[str, float]]) -> list[TextLine]:
        lines = []
        for box, (text, score) in zip(boxes, texts, strict=True):
            if text.strip() and score >= self.settings.min_score:
                corners = tuple((round(float(x), 1), round(float(y), 1)) for x, y in box)
                lines.append(TextLine(text.strip(), round(score, 4), corners))
        return lines


def load_bgr(path: Path) -> np.ndarray:
    """A poster as the contiguous BGR uint8 array the OCR models expect."""
    return np.ascontiguousarray(np.asarray(open_rgb(path))[:, :, ::-1])


# --- running over many posters -----------------------------------------------------------------

_worker_engine: OcrEngine | None = None


def _init_worker(settings: dict) -> None:
    global _worker_engine
    _worker_engine = OcrEngine(OcrSettings.from_dict(settings), threads=1)


def _read_task(engine: OcrEngine, task: list[tuple[str, Path]]) -> list[tuple[str, list]]:
    """``[(content key, stored lines)]`` for one task of ``(content key, path)`` pairs."""
    return [(key, _to_record(engine.read(load_bgr(path)))) for key, path in task]


def _worker_read(task: list[tuple[str, Path]]) -> list[tuple[str, list]]:
    assert _worker_engine is not None, "worker used before _init_worker"
    return _read_task(_worker_engine, task)


def default_workers(n_posters: int) -> int:
    """One single-threaded process per core when there is enough work to share, else one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, n_posters // MIN_POSTERS_PER_WORKER))


def _run_tasks(tasks: list[list[tuple[str, Path]]], settings: OcrSettings, workers: int) -> Iterator[list]:
    """Results of each task as it finishes, in this process or in ``workers`` processes."""
    if not tasks:  # everything cached: loading the OCR models would cost a third of a second for nothing
        return
    if workers <= 1:
        engine = OcrEngine(settings)
        for task in tasks:
            yield _read_task(engine, task)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # spawn, not fork: thread pools (onnxruntime's, OpenCV's, torch's) do not survive a fork safely.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(settings.to_dict(),))
    try:
        futures = [pool.submit(_worker_read, task) for task in tasks]
        for future in as_completed(futures):
            yield future.result()
    except BrokenProcessPool as exc:
        raise RuntimeError(
            "an OCR worker process died (posters read so far are cached). If you called ocr_posters from a "
            "script, put its top-level code under `if __name__ == '__main__':` (workers are spawned and "
            "re-import it); if memory ran out, pass fewer workers, or workers=1 to read in this process"
        ) from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _to_record(lines: list[TextLine]) -> list:
    return [[line.text, line.confidence, [list(point) for point in line.box]] for line in lines]


def _from_record(record: list) -> list[TextLine]:
    return [TextLine(text, float(score), tuple(tuple(point) for point in box)) for text, score, box in record]


def _content_keys(image_paths: dict[str, Path]) -> dict[str, str]:
    from postergenre.cache import content_digest, save_digests

    keys = {}
    try:
        for id_, path in image_paths.items():
            try:
                keys[id_] = content_digest(path)
            except OSError as exc:
                reason = exc.strerror or exc
                raise ImageError(f"{path}: cannot be read for OCR ({reason}); check the poster of {id_}") from exc
    finally:
        save_digests()
    return keys


def fusion_version(settings: OcrSettings) -> int:
    """Which rewrite of the models read the text (0: as shipped); part of the caches' keys, so that a
    changed rewrite does not reuse what an older one read."""
    return FUSION_VERSION if settings.fuse else 0


def open_ocr_store(settings: OcrSettings, cache_dir: Path | str | None = None):
    """The cache of OCR results for these settings and the installed package version."""
    from postergenre.cache import cache_root
    from postergenre.records import RecordStore

    root = Path(cache_dir) if cache_dir is not None else cache_root() / "ocr"
    spec = {
        "format": OCR_FORMAT,
        "package": OCR_PACKAGE,
        "version": package_version(),
        "settings": settings.to_dict(),
        "fused": fusion_version(settings),
    }
    return RecordStore(root, spec)


def ocr_posters(
    image_paths: dict[str, Path],
    *,
    settings: OcrSettings | None = None,
    cache_dir: Path | str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> OcrResults:
    """The text lines of each poster, ``{id: [TextLine, ...]}`` in reading order.

    Results are cached under ``cache_dir`` (default ``<cache root>/ocr``) per poster, keyed by the
    file's content hash, ``settings`` and the OCR package's version, and are written as each group
    of posters finishes, so an interrupted run keeps its work. ``workers`` processes share the
    posters still to read (default: one per core when there are enough of them); they are spawned,
    so a script calling this with more than one worker needs an ``if __name__ == "__main__":``
    guard. The result's ``n_cached`` and ``n_computed`` count the posters taken from the cache and
    read now. An undecodable poster raises :class:`ImageError` naming its file.
    """
    from tqdm.auto import tqdm

    settings = settings or OcrSettings()
    store = open_ocr_store(settings, cache_dir)
    keys = _content_keys(image_paths)
    todo = {key: Path(image_paths[id_]) for id_, key in keys.items() if key not in store}
    n_computed = sum(key in todo for key in keys.values())
    # Quiet calls (one poster explained, a report's examples) would repeat this line per poster.
    log = logger.info if progress else logger.debug
    log("OCR: %d posters cached, %d to read (cache %s)", len(keys) - n_computed, n_computed, store.folder)

    items = list(todo.items())
    tasks = [items[start : start + POSTERS_PER_TASK] for start in range(0, len(items), POSTERS_PER_TASK)]
    workers = default_workers(len(items)) if workers is None else workers
    with tqdm(total=len(items), unit="poster", desc="OCR", disable=not progress or not items) as bar:
        for results in _run_tasks(tasks, settings, workers):
            store.append(results)
            bar.update(len(results))

    lines = {id_: _from_record(store.get(key)) for id_, key in keys.items()}
    return OcrResults(lines, n_cached=len(keys) - n_computed, n_computed=n_computed)
