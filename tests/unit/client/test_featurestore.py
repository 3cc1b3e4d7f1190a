"""Features kept on disk for a run: read back exactly, and a picture in many pairs is decoded once."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from photodedup.client.featurestore import Features, FeatureStore
from photodedup.client.verify import GeometricVerifier, align, load_picture

from scenes import crop, scene


def test_features_come_back_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    kept = Features(
        rng.random((600, 2), dtype=np.float32) * 512,
        rng.integers(0, 256, (600, 32), dtype=np.uint8),
        12345.678,
        (384, 512),
    )
    store = FeatureStore(tmp_path)
    store.put("a.jpg", kept)
    store.put("none.jpg", Features(np.zeros((0, 2), np.float32), None, 0.0, (10, 20)))
    back = store.get("a.jpg")
    assert back is not None
    assert np.array_equal(back.points, kept.points) and back.points.dtype == np.float32
    assert np.array_equal(back.descriptors, kept.descriptors) and back.descriptors.dtype == np.uint8
    assert (back.reach, back.shape, back.area) == (kept.reach, kept.shape, 384 * 512)
    empty = store.get("none.jpg")
    assert empty is not None and empty.points.shape == (0, 2) and empty.descriptors is None and empty.shape == (10, 20)
    assert store.get("other.jpg") is None
    assert store.reads == 2 and len(store) == 2 and store.written == 2 * 20 + 600 * 40


def test_the_file_is_unnamed_and_goes_with_the_store(tmp_path: Path) -> None:
    """The temporary file lives in the folder it is given (the index's) but has no name there, so a killed
    run leaves nothing behind; closing drops what it held."""
    store = FeatureStore(tmp_path)
    store.put("a.jpg", Features(np.ones((3, 2), np.float32), np.ones((3, 32), np.uint8), 1.0, (4, 4)))
    assert store.get("a.jpg") is not None
    assert os.listdir(tmp_path) == []
    store.close()
    assert store.get("a.jpg") is None and len(store) == 0 and store.written == 20 + 3 * 40


def test_a_store_that_cannot_write_loses_nothing_but_time(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = FeatureStore(tmp_path / "gone")  # no such folder: the file cannot be made
    with caplog.at_level(logging.WARNING):
        store.put("a.jpg", Features(np.ones((3, 2), np.float32), np.ones((3, 32), np.uint8), 1.0, (4, 4)))
        store.put("b.jpg", Features(np.ones((3, 2), np.float32), np.ones((3, 32), np.uint8), 1.0, (4, 4)))
    assert store.get("a.jpg") is None
    assert len([r for r in caplog.records if "cannot be kept on disk" in r.getMessage()]) == 1


def test_kept_features_align_as_the_picture_does(tmp_path: Path) -> None:
    img = scene(21, (640, 480))
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    img.save(a, quality=90)
    crop(img, (0.1, 0.05, 0.9, 0.85)).save(b, quality=80)
    pa, pb = load_picture(str(a)), load_picture(str(b))
    store = FeatureStore(tmp_path)
    store.put("a", pa.features())
    store.put("b", pb.features())
    fa, fb = store.get("a"), store.get("b")
    assert fa is not None and fb is not None
    direct, kept = align(pa, pb), align(fa, fb)
    assert direct.verdict.same and kept.verdict.same
    assert np.array_equal(direct.transform, kept.transform) and direct.verdict == kept.verdict


def test_a_picture_in_many_pairs_is_decoded_once(tmp_path: Path) -> None:
    """With room for one decoded picture, a centre met by many candidates (and each candidate met again)
    is decoded once a run: its features are read back. Verdicts are those of a verifier that holds every
    picture, copies (which need the pixels again for the agreement check) included."""
    original = scene(22, (640, 480))
    paths = [tmp_path / "original.jpg"]
    original.save(paths[0], quality=90)
    for k, box in enumerate([(0.1, 0.1, 0.9, 0.9), (0.0, 0.0, 0.8, 1.0)]):
        paths.append(tmp_path / f"crop{k}.jpg")
        crop(original, box).save(paths[-1], quality=85)
    for seed in (31, 32, 33):
        paths.append(tmp_path / f"other{seed}.jpg")
        scene(seed, (640, 480)).convert("RGB").save(paths[-1], quality=90)
    pairs = [(str(x), str(y)) for i, x in enumerate(paths) for y in paths[i + 1 :]] * 2
    small, roomy = GeometricVerifier(cache_size=1, spill_dir=tmp_path), GeometricVerifier(cache_size=64)
    try:
        got = [small.verdict(x, None, y, None) for x, y in pairs]
        want = [roomy.verdict(x, None, y, None) for x, y in pairs]
    finally:
        small.close()
        roomy.close()
    assert got == want
    assert sum(v.same for v in got) == 2 * 3  # the original and its two crops, each pair twice
    # Each picture once, plus, for each pair that aligns (3 pairs among the copies, each asked twice), at
    # most its two pictures again for the agreement check. Without the kept features: 72 decodes.
    aligned = 3 * 2
    assert small.store.reads > 0
    assert len(paths) <= small.decodes <= len(paths) + 2 * aligned
    assert roomy.decodes == len(paths)


def test_a_picture_that_cannot_be_decoded_is_tried_once_a_run(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    scene(23, (320, 240)).save(good, quality=90)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    verifier = GeometricVerifier(cache_size=1)
    for _ in range(3):
        assert verifier.verdict(str(good), None, str(broken), None).reason == "cannot decode"
        # A picture against itself aligns, so its pixels are decoded again: the broken one leaves the cache.
        assert verifier.verdict(str(good), None, str(good), None).same
    # The good file, the broken one, the good one again (the broken one had taken the one place); then both
    # stay answered: the good one from the cache, the broken one as undecodable. Asked again each round: 7.
    assert verifier.decodes == 3
    verifier.close()
