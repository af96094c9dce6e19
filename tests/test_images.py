"""Opening posters and scanning folders of them: good files decode, bad ones are named, never crash a scan."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import write_poster
from PIL import Image

from postergenre.data.images import (
    MAX_IMAGE_PIXELS,
    ImageError,
    ImageRecord,
    open_rgb,
    phash_distances,
    records_to_frame,
    scan_images,
)
from postergenre.errors import PosterGenreError


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares ``width`` x ``height`` pixels but holds no picture: costs nothing to write."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b""))


def _bad_files(folder: Path) -> dict[str, Path]:
    """One file for each way a poster can fail to decode."""
    folder.mkdir(parents=True, exist_ok=True)
    write_poster(folder / "good.jpg", seed=1, size=(80, 120))
    data = (folder / "good.jpg").read_bytes()
    files = {
        "half": data[: len(data) // 2],
        "no-end": data[:-40],
        "header-only": data[:200],
        "text": b"Id,Genre\nthis is a CSV, not a poster\n",
        "zero": b"",
    }
    for name, content in files.items():
        (folder / f"{name}.jpg").write_bytes(content)
    return {name: folder / f"{name}.jpg" for name in files}


def test_open_rgb_decodes_a_jpeg(tmp_path):
    """Check that a good JPEG opens as an RGB image of its size."""
    write_poster(tmp_path / "p.jpg", seed=0, size=(40, 60))
    image = open_rgb(tmp_path / "p.jpg")
    assert image.mode == "RGB" and image.size == (40, 60)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_open_rgb_converts_other_modes(tmp_path, mode):
    """Check that greyscale, transparent, palette and CMYK images come back as RGB."""
    path = tmp_path / ("p.jpg" if mode in ("L", "CMYK") else "p.png")
    Image.new(mode, (30, 20)).save(path)
    image = open_rgb(path)
    assert image.mode == "RGB" and image.size == (30, 20)


def test_open_rgb_reads_file_objects(tmp_path):
    """Check that a binary file object decodes, and its errors use the given name or say 'image data'."""
    write_poster(tmp_path / "p.jpg", seed=0)
    assert open_rgb(io.BytesIO((tmp_path / "p.jpg").read_bytes())).mode == "RGB"
    with pytest.raises(ImageError, match=r"^upload.jpg: not an image file"):
        open_rgb(io.BytesIO(b"hello"), name="upload.jpg")
    with pytest.raises(ImageError, match=r"^image data: not an image file"):
        open_rgb(io.BytesIO(b"hello"))


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("half", r"cannot be decoded \(.*\); the file may be truncated or corrupt"),
        ("no-end", r"cannot be decoded \(.*truncated.*\); the file may be truncated or corrupt"),
        ("header-only", r"cannot be decoded \(.*\); the file may be truncated or corrupt"),
        ("text", r"not an image file \(JPEG, PNG or WebP expected\)"),
        ("zero", r"not an image file \(JPEG, PNG or WebP expected\)"),
    ],
)
def test_open_rgb_names_a_bad_file(tmp_path, case, expected):
    """Check that a truncated JPEG, a text file named .jpg and an empty file raise ImageError naming the file."""
    path = _bad_files(tmp_path)[case]
    with pytest.raises(ImageError, match="^" + str(path).replace(".", r"\.") + ": " + expected) as info:
        open_rgb(path)
    assert isinstance(info.value, PosterGenreError) and "\n" not in str(info.value)


def test_open_rgb_missing_file(tmp_path):
    """Check that a missing file raises ImageError saying so."""
    with pytest.raises(ImageError, match=r"nothere.jpg: file not found"):
        open_rgb(tmp_path / "nothere.jpg")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_open_rgb_refuses_huge_images_before_decoding(tmp_path):
    """Check that an image declaring more pixels than a poster can have is refused, with the limit named."""
    _png_header(tmp_path / "big.png", 7000, 7000)
    assert MAX_IMAGE_PIXELS < 7000 * 7000
    with pytest.raises(ImageError, match=r"big.png: declares 7000x7000 pixels, over the limit of 40,000,000; resize"):
        open_rgb(tmp_path / "big.png")
    _png_header(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(ImageError, match=r"bomb.png: (too many pixels|declares 20000x20000)"):
        open_rgb(tmp_path / "bomb.png")


def test_scan_records_size_digest_and_hash(tmp_path):
    """Check that a scan gives each good poster its byte count, SHA-256, size and a non-zero perceptual hash."""
    paths = {}
    for k in range(3):
        paths[f"tt{k}"] = tmp_path / f"tt{k}.jpg"
        write_poster(paths[f"tt{k}"], seed=k, size=(50 + k, 70))
    records = scan_images(paths, progress=False, workers=2)
    assert [r.id for r in records] == ["tt0", "tt1", "tt2"]
    for k, record in enumerate(records):
        data = paths[record.id].read_bytes()
        assert record.error is None and record.path == paths[record.id]
        assert record.n_bytes == len(data) and record.sha256 == hashlib.sha256(data).hexdigest()
        assert (record.width, record.height) == (50 + k, 70)
        assert 0 < record.phash < 2**64
    assert len({r.phash for r in records}) == 3


def test_a_second_scan_opens_only_the_posters_that_changed(tmp_path, monkeypatch):
    """Check a scan reuses stored scans of unchanged posters (opening none), rescans a changed one and
    matches a scan without the cache."""
    from postergenre.data import images

    paths = {f"tt{k}": tmp_path / f"tt{k}.jpg" for k in range(3)}
    for k, path in enumerate(paths.values()):
        write_poster(path, seed=k, size=(50 + k, 70))
    first = scan_images(paths, progress=False)
    opened = []
    real_open = images.Image.open
    monkeypatch.setattr(images.Image, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    assert scan_images(paths, progress=False) == first and opened == []

    write_poster(paths["tt1"], seed=9, size=(60, 80))
    again = scan_images(paths, progress=False)
    assert opened == [paths["tt1"]]
    assert again == scan_images(paths, progress=False, cache=False)
    assert (again[1].width, again[1].height) == (60, 80) and again[1].sha256 != first[1].sha256


def test_scan_records_errors_instead_of_raising(tmp_path):
    """Check that a scan records an error for every undecodable file and still scans the good ones."""
    bad = _bad_files(tmp_path)
    paths = {"good": tmp_path / "good.jpg", **bad}
    records = {r.id: r for r in scan_images(paths, progress=False)}
    assert records["good"].error is None
    for name in bad:
        assert records[name].error, name
        assert (records[name].width, records[name].height, records[name].phash) == (0, 0, 0)
    assert records["text"].error == "not an image file"
    assert records["zero"].error == "empty file (0 bytes)"
    assert "truncated" in records["no-end"].error


def test_scan_survives_a_file_that_went_away(tmp_path):
    """Check that a file deleted (or made a folder) after listing is recorded as an error, not raised."""
    write_poster(tmp_path / "a.jpg", seed=0)
    (tmp_path / "folder.jpg").mkdir()
    records = scan_images(
        {"a": tmp_path / "a.jpg", "gone": tmp_path / "gone.jpg", "folder": tmp_path / "folder.jpg"}, progress=False
    )
    errors = {r.id: r.error for r in records}
    assert errors["a"] is None
    assert errors["gone"].startswith("cannot read the file (No such file or directory")
    assert errors["folder"].startswith("cannot read the file (Is a directory")


def test_scan_of_nothing(tmp_path):
    """Check that scanning no files gives no records and an empty frame."""
    assert scan_images({}, progress=False) == []
    assert records_to_frame([]).empty


def test_records_to_frame(tmp_path):
    """Check that records become a frame indexed by id with one column per field."""
    write_poster(tmp_path / "a.jpg", seed=0)
    (tmp_path / "b.jpg").write_bytes(b"")
    frame = records_to_frame(scan_images({"a": tmp_path / "a.jpg", "b": tmp_path / "b.jpg"}, progress=False))
    assert list(frame.index) == ["a", "b"]
    assert {"path", "n_bytes", "sha256", "width", "height", "phash", "error"} <= set(frame.columns)
    assert frame.loc["b", "error"] == "empty file (0 bytes)" and frame.loc["a", "width"] == 40


def test_phash_distances_count_differing_bits():
    """Check that distances are the number of differing bits, including the top bit of a 64-bit hash."""
    a = np.array([0, 0b1011, 2**63], dtype=np.uint64)
    b = np.array([0, 2**64 - 1], dtype=np.uint64)
    assert phash_distances(a, b).tolist() == [[0, 64], [3, 61], [1, 63]]


def test_record_defaults():
    """Check that a record made without decoding fields has zeros and no error."""
    record = ImageRecord("tt1", Path("tt1.jpg"), 10, "abc")
    assert (record.width, record.height, record.phash, record.error) == (0, 0, 0, None)
