"""The re-compression test: which JPEG copy was made from which, and the keeper it gives a group."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import record
from PIL import Image, ImageDraw, ImageEnhance

from photodedup.client.grouping import FileRecord, GroupingConfig, Tier, find_groups
from photodedup.client.index import Index
from photodedup.client.lineage import _remake_error, lineage
from photodedup.client.sources import StoredLineage, prefer_sources

from helpers import photo


@pytest.fixture
def remakes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, bool]]:
    """The saturation stage of every re-make the lineage test makes, in order (`_remake_error` counted)."""
    import photodedup.client.lineage as lin

    calls: list[tuple[float, bool]] = []
    real = lin._remake_error

    def counted(frames, dst_image, saturation=(1.0, False)):  # type: ignore[no-untyped-def]
        calls.append(saturation)
        return real(frames, dst_image, saturation)

    monkeypatch.setattr(lin, "_remake_error", counted)
    return calls


@pytest.fixture
def original(tmp_path: Path) -> tuple[Image.Image, str]:
    img = photo(21, (480, 360))
    path = tmp_path / "original.jpg"
    img.save(path, quality=90)
    return Image.open(path).convert("RGB"), str(path)


@pytest.mark.parametrize(
    ("edit", "quality"),
    [
        (lambda im: im, 75),
        (lambda im: im.transpose(Image.Transpose.ROTATE_90), 88),
        (lambda im: im.point(lambda v: min(255, v + 20)), 85),
    ],
    ids=["re-encoded", "turned", "brightened"],
)
def test_a_copy_made_from_a_jpeg_is_told_from_its_source(original, tmp_path: Path, edit, quality) -> None:  # type: ignore[no-untyped-def]
    decoded, source = original
    copy = tmp_path / "copy.jpg"
    edit(decoded).save(copy, quality=quality)
    forward, backward = lineage(source, str(copy)), lineage(str(copy), source)
    assert forward.source == 1 and forward.b_from_a < forward.a_from_b, forward
    assert backward.source == -1, backward


def _saved(img: Image.Image, path: Path, quality: int) -> str:
    img.save(path, quality=quality)
    return str(path)


@pytest.mark.parametrize(
    ("seed", "edit"),
    [
        (21, lambda im: ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(1.2)).enhance(1.1)),
        (9, lambda im: im.point(lambda v: int(255 * (v / 255) ** 0.8))),
    ],
    ids=["brightened", "gamma"],
)
def test_a_tone_edit_saved_with_its_sources_tables_is_told(tmp_path: Path, seed: int, edit) -> None:  # type: ignore[no-untyped-def]
    """The same quality both times: the curve fitted on noisy levels is refined until the copy is re-made."""
    source = _saved(photo(seed, (480, 360)), tmp_path / "source.jpg", 90)
    copy = _saved(edit(Image.open(source).convert("RGB")), tmp_path / "copy.jpg", 90)
    assert lineage(source, copy).source == 1
    assert lineage(copy, source).source == -1


@pytest.mark.parametrize("seed", [21, 5])
def test_a_colour_and_curve_edit_saved_with_its_sources_tables_is_told(tmp_path: Path, seed: int) -> None:
    """Saturation raised (a colour slider), then a gamma curve: no per-channel curve alone describes it."""
    source = _saved(photo(seed, (480, 360)), tmp_path / "source.jpg", 90)
    edited = ImageEnhance.Color(Image.open(source).convert("RGB")).enhance(1.5)
    copy = _saved(edited.point(lambda v: int(255 * (v / 255) ** 0.8)), tmp_path / "copy.jpg", 90)
    assert lineage(source, copy).source == 1
    assert lineage(copy, source).source == -1


@pytest.mark.parametrize("turn", [None, Image.Transpose.ROTATE_270], ids=["re-saved", "turned"])
def test_a_copy_re_saved_at_a_higher_quality_is_told(tmp_path: Path, turn) -> None:  # type: ignore[no-untyped-def]
    """Both ways re-make most blocks exactly; only the copy is re-made exactly in (nearly) all of them."""
    source = _saved(photo(21, (480, 360)), tmp_path / "source.jpg", 90)
    decoded = Image.open(source).convert("RGB")
    copy = _saved(decoded.transpose(turn) if turn else decoded, tmp_path / "copy.jpg", 95)
    assert lineage(source, copy).source == 1
    assert lineage(copy, source).source == -1


def test_a_stamped_copy_is_still_a_copy(tmp_path: Path) -> None:
    """A caption box moves the small picture's mean and spread; the rest of the picture still matches."""
    source = _saved(photo(5, (480, 360)), tmp_path / "source.jpg", 90)
    stamped = Image.open(source).convert("RGB")
    draw = ImageDraw.Draw(stamped)
    draw.rectangle((10, 10, 180, 50), fill=(255, 255, 255))
    draw.text((14, 14), "(c) studio", fill=(120, 120, 120))
    copy = _saved(stamped, tmp_path / "copy.jpg", 88)
    assert lineage(source, copy).source == 1


def test_pictures_that_are_not_copies_or_not_jpegs_say_nothing(original, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    decoded, source = original
    other = tmp_path / "other.jpg"
    photo(22, (480, 360)).save(other, quality=75)
    png = tmp_path / "copy.png"
    decoded.save(png)
    assert lineage(source, str(other)).source == 0
    assert lineage(source, str(png)).source == 0
    assert lineage(source, str(tmp_path / "missing.jpg")).source == 0
    tga = tmp_path / "copy-tga.jpg"  # a decoder outside the allow-list, under a JPEG name: never opened
    decoded.save(tga, format="TGA")
    assert lineage(source, str(tga)).source == 0


def _group(tmp_path: Path, protected: bool = False):  # type: ignore[no-untyped-def]
    keep = record(tmp_path / "a-copy.jpg", mtime=1.0, dhash=0, phash=0, quality=90)
    source = record(tmp_path / "b-source.jpg", mtime=2.0, dhash=1, phash=0, quality=90)
    smaller = record(tmp_path / "c-small.jpg", mtime=3.0, dhash=3, phash=0, quality=90, width=320, height=240)
    refs = [str(tmp_path)] if protected else []
    (group,) = find_groups([keep, source, smaller], GroupingConfig(near_threshold=4), reference_dirs=refs)
    assert group.keep is keep and group.kind is Tier.NEAR
    return group, source


def test_a_keeper_made_from_a_tied_copy_gives_way_to_it(tmp_path: Path) -> None:
    group, source = _group(tmp_path)
    asked: list[tuple[str, str]] = []

    def test(a: FileRecord, b: FileRecord) -> int:
        asked.append((a.path, b.path))
        return -1 if b is source else 0

    (changed,) = prefer_sources([group], GroupingConfig(near_threshold=4), test)
    assert changed.keep is source and changed.members[0].record is source
    assert {m.record.path for m in changed.members} == {m.record.path for m in group.members}
    # Only the copy that ties on the content rules was tested (the smaller picture was not).
    assert asked == [(group.keep.path, source.path)]
    (same,) = prefer_sources([group], GroupingConfig(near_threshold=4), lambda a, b: 0)
    assert same.keep is group.keep


def test_a_keeper_saved_at_a_higher_quality_than_its_source_gives_way_to_it(tmp_path: Path) -> None:
    """An edit re-saved at q95 from a q80 original ranks first on quality; the test shows what it was made
    from, and the original is kept. A keeper that is the source of a lower-quality copy stays."""
    keep = record(tmp_path / "a-edit.jpg", dhash=0, phash=0, quality=95)
    source = record(tmp_path / "b-original.jpg", dhash=1, phash=0, quality=80)
    config = GroupingConfig(near_threshold=4)
    (group,) = find_groups([keep, source], config)
    assert group.keep is keep
    (changed,) = prefer_sources([group], config, lambda a, b: -1 if (a, b) == (keep, source) else 0)
    assert changed.keep is source
    (same,) = prefer_sources([group], config, lambda a, b: 1 if (a, b) == (keep, source) else 0)
    assert same.keep is keep


def test_a_keeper_in_a_reference_folder_stays(tmp_path: Path) -> None:
    group, source = _group(tmp_path, protected=True)
    (same,) = prefer_sources([group], GroupingConfig(near_threshold=4), lambda a, b: -1)
    assert same.keep is group.keep


def test_answers_are_kept_in_the_index_by_content_either_way_round(original, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import photodedup.client.sources as module

    decoded, source = original
    copy = tmp_path / "copy.jpg"
    decoded.save(copy, quality=70)
    a = record(source, md5="f" * 32)  # the original's MD5 sorts after the copy's
    b = record(copy, md5="0" * 32)
    with Index(tmp_path / "i.sqlite3") as index:
        first = StoredLineage(index)
        assert first(a, b) == 1 and first(b, a) == -1
        first.flush()
        monkeypatch.setattr(module, "lineage", lambda *args: pytest.fail("asked again"))
        again = StoredLineage(index)
        assert again(a, b) == 1 and again(b, a) == -1


def test_many_same_looking_copies_cost_a_few_tests(tmp_path: Path) -> None:
    """A burst of 40 pixel-identical re-saves ties on every rule: the group is settled with a few tests."""
    from photodedup.client.sources import MAX_TESTS_PER_GROUP

    copies = [record(tmp_path / f"{k:02d}.jpg", mtime=float(k), quality=90) for k in range(40)]
    (group,) = find_groups(copies, GroupingConfig(near_threshold=4))
    asked: list[str] = []
    prefer_sources([group], GroupingConfig(near_threshold=4), lambda a, b: asked.append(b.path) or 0)
    assert 0 < len(asked) <= MAX_TESTS_PER_GROUP


def test_the_same_pixels_under_two_names_say_nothing(original, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, source = original
    retagged = tmp_path / "retagged.jpg"
    retagged.write_bytes(Path(source).read_bytes() + b"\x00")  # other bytes after the image, same pixels
    assert lineage(source, str(retagged)).source == 0


def test_siblings_are_not_fitted_again_for_a_saturation_change(
    tmp_path: Path, remakes: list[tuple[float, bool]]
) -> None:
    """Two files saved from the same pixels at two qualities: neither was made from the other, and when no
    saturation change fits better than the curves alone the saturation family's fit is not made again
    (it was most of a first scan of a library of such siblings)."""
    img = photo(7, (320, 240))
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    img.save(a, quality=85)
    img.save(b, quality=70)
    calls = remakes
    assert lineage(str(a), str(b)).source == 0
    assert calls == [(1.0, False), (1.0, False)]


@pytest.mark.parametrize(("factor", "gamma"), [(1.15, 1.0), (0.85, 0.8), (1.5, 0.8), (0.6, 1.1)])
def test_the_saturation_shortcut_takes_the_whole_familys_choice(tmp_path: Path, factor: float, gamma: float) -> None:
    """1x is taken without the rest of the family only where the whole family would take it: a copy made
    with a saturation change (mild ones beside 1x too, with a curve or without) still gets its factor."""
    import numpy as np

    import photodedup.client.lineage as lin

    source = _saved(photo(5, (480, 360)), tmp_path / "source.jpg", 90)
    decoded = Image.open(source).convert("RGB")
    edited = ImageEnhance.Color(decoded).enhance(factor).point(lambda v: int(255 * (v / 255) ** gamma))
    copy = _saved(edited, tmp_path / "copy.jpg", 90)
    src, dst = np.asarray(decoded), np.asarray(Image.open(copy).convert("RGB"))
    for a, b in ((src, dst), (dst, src)):
        chosen = lin._choose_saturation(a, b)
        assert chosen == lin._choose_saturation(a, b, whole_family=True)
        assert chosen != (1.0, False)


def test_a_saturation_change_is_found_by_walking_its_valley(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy made with a 1.5x saturation change: each side's walk down from 1x reaches the whole family's
    choice with fewer fits than the family's 30 (a walk that kept going, or tried every factor, would not)."""
    import numpy as np

    import photodedup.client.lineage as lin

    source = _saved(photo(5, (480, 360)), tmp_path / "source.jpg", 90)
    decoded = Image.open(source).convert("RGB")
    copy = _saved(ImageEnhance.Color(decoded).enhance(1.5), tmp_path / "copy.jpg", 90)
    src, dst = np.asarray(decoded), np.asarray(Image.open(copy).convert("RGB"))
    fits: list[int] = []
    real = lin._curve
    monkeypatch.setattr(lin, "_curve", lambda s, d: fits.append(1) or real(s, d))
    chosen = lin._choose_saturation(src, dst)
    walked = len(fits)
    assert chosen == lin._choose_saturation(src, dst, whole_family=True)
    assert abs(chosen[0] - 1.5) < 0.15
    assert len(fits) - walked == 30
    assert walked < 15, walked  # 11: 1x, then each side one step down and four up


def test_siblings_try_only_the_saturations_beside_1x(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two saves of one picture: no saturation change between them, found with five fits, not the family's 30."""
    import numpy as np

    import photodedup.client.lineage as lin

    img = photo(7, (320, 240))
    img.save(tmp_path / "a.jpg", quality=85)
    img.save(tmp_path / "b.jpg", quality=70)
    a, b = (np.asarray(Image.open(tmp_path / n).convert("RGB")) for n in ("a.jpg", "b.jpg"))
    fits: list[int] = []
    real = lin._curve
    monkeypatch.setattr(lin, "_curve", lambda s, d: fits.append(1) or real(s, d))
    assert lin._choose_saturation(a, b) == lin._choose_saturation(a, b, whole_family=True) == (1.0, False)
    assert len(fits) == 5 + 30


def test_groups_advance_together_and_hand_each_rounds_pairs_to_prefetch(tmp_path: Path) -> None:
    """Two groups, three tied copies in the first: each round's pairs are handed over at once, and a round's
    answer (the keeper was made from its copy) decides the pair the next round asks about."""
    config = GroupingConfig(near_threshold=4)
    first = [record(tmp_path / f"a{k}.jpg", dhash=k, phash=0, quality=90) for k in range(3)]
    second = [record(tmp_path / f"b{k}.jpg", dhash=k, phash=0, quality=90) for k in range(2)]
    groups = find_groups(first, config) + find_groups(second, config)
    assert sorted(len(g.members) for g in groups) == [2, 3]
    big = next(g for g in groups if len(g.members) == 3)
    keep, (c1, c2) = big.keep, [m.record for m in big.members if m.record is not big.keep]
    rounds: list[list[tuple[str, str]]] = []

    class Test:
        def __call__(self, a: FileRecord, b: FileRecord) -> int:
            return -1 if (a, b) == (keep, c1) else 0

        def prefetch(self, pairs: list[tuple[FileRecord, FileRecord]]) -> None:
            rounds.append(sorted((a.path, b.path) for a, b in pairs))

    out = prefer_sources(groups, config, Test())
    other = next(g for g in groups if g is not big)
    assert rounds[0] == sorted([(keep.path, c1.path), (other.keep.path, other.members[1].record.path)])
    assert rounds[1] == [(c1.path, c2.path)]  # asked from the copy the keeper was made from
    assert [g.keep for g in out] == [c1 if g is big else g.keep for g in groups]


def test_tests_not_stored_yet_run_in_worker_processes(original, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import photodedup.client.sources as module

    decoded, source = original
    copies = []
    for quality, path in ((70, "re-saved.jpg"), (88, "turned.jpg")):
        img = decoded.transpose(Image.Transpose.ROTATE_90) if path == "turned.jpg" else decoded
        img.save(tmp_path / path, quality=quality)
        copies.append(record(tmp_path / path, md5=path[0] * 32))
    a = record(source, md5="f" * 32)
    monkeypatch.setattr(module, "PARALLEL_TESTS", 2)
    with Index(tmp_path / "i.sqlite3") as index:
        stored = StoredLineage(index, workers=2)
        stored.prefetch([(a, c) for c in copies])
        # The workers answered: this process never runs the test.
        monkeypatch.setattr(module, "lineage", lambda *args: pytest.fail("tested here, not in a worker"))
        assert [stored(a, c) for c in copies] == [1, 1]
        assert [stored(c, a) for c in copies] == [-1, -1]
        assert len(stored.new) == 2
        stored.close()


def test_the_workers_are_started_once_for_every_round(original, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`prefer_sources` asks in rounds: the workers started by the first are kept for the next (each start cost
    ~0.3 s), a later round smaller than PARALLEL_TESTS runs on them too, and `close` stops them."""
    import concurrent.futures

    import photodedup.client.sources as module

    decoded, source = original
    copies = []
    for k, quality in enumerate((70, 75, 80)):
        decoded.save(tmp_path / f"c{k}.jpg", quality=quality)
        copies.append(record(tmp_path / f"c{k}.jpg", md5=str(k) * 32))
    a = record(source, md5="f" * 32)
    started = []
    real = concurrent.futures.ProcessPoolExecutor

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        started.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", counted)
    monkeypatch.setattr(module, "PARALLEL_TESTS", 3)
    with Index(tmp_path / "i.sqlite3") as index:
        stored = StoredLineage(index, workers=2)
        stored.prefetch([(a, c) for c in copies[:3]])  # the first round starts them
        stored.prefetch([(copies[0], c) for c in copies[1:]])  # two: fewer than PARALLEL_TESTS, run there too
        assert len(started) == 1 and len(stored.new) == 5
        monkeypatch.setattr(module, "lineage", lambda *args: pytest.fail("tested here, not in a worker"))
        assert stored(copies[0], copies[2]) in (-1, 0, 1)  # answered by a worker: this process never tests
        stored.close()
        assert stored._pool is None


def _per_pixel_block_errors(again, dst):  # type: ignore[no-untyped-def]
    """The block errors as first written (channel mean by `.mean`), to hold the faster form to."""
    import numpy as np

    err = np.abs(again - dst.astype(np.int16)).mean(axis=2)[8:-8, 8:-8]
    hh, ww = err.shape[0] // 8 * 8, err.shape[1] // 8 * 8
    return err[:hh, :ww].reshape(hh // 8, 8, ww // 8, 8).mean(axis=(1, 3)).ravel()


@pytest.mark.parametrize("size", [(480, 360), (321, 239)], ids=["even", "odd"])
def test_the_binned_curve_fit_is_the_per_pixel_fit_bit_for_bit(tmp_path: Path, size: tuple[int, int]) -> None:
    """The histogram of level pairs gives the curves fitted pixel by pixel, bit for bit (a stamp left out of
    the second fit as before), so the test's answers stay; so do the faster block errors."""
    import numpy as np

    import photodedup.client.lineage as lin

    source = _saved(photo(5, size), tmp_path / "source.jpg", 90)
    decoded = Image.open(source).convert("RGB")
    toned = ImageEnhance.Color(decoded).enhance(1.3).point(lambda v: int(255 * (v / 255) ** 0.8))
    ImageDraw.Draw(toned).rectangle((20, 20, 120, 60), fill=(250, 250, 250))  # a stamp the fit leaves out
    copy = _saved(toned, tmp_path / "copy.jpg", 80)
    a, b = np.asarray(decoded), np.asarray(Image.open(copy).convert("RGB"))
    for src, dst in ((a, b), (b, a), (a[:40, :50], b[:40, :50]), (a[::3, ::3], b[::3, ::3])):
        with pytest.MonkeyPatch.context() as m:
            m.setattr(lin, "HISTOGRAM_CELLS", 0)  # binned
            binned = lin._curve(src, dst)
            m.setattr(lin, "HISTOGRAM_CELLS", 10**12)  # one cell per pixel
            assert np.array_equal(binned, lin._curve(src, dst))
    again = a.astype(np.int16)
    assert np.array_equal(lin._block_errors(again, b), _per_pixel_block_errors(again, b))


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_the_reduction_from_the_decoded_image_is_the_one_through_its_pixels(tmp_path: Path, mode: str) -> None:
    """`_small` and `_rgb` read the decoded image itself; what they give is what the array round trip gave
    (the RGB copy, then a grey 32 x 32 reduction of it), bit for bit, so no turn or answer moves."""
    import numpy as np

    import photodedup.client.lineage as lin

    path = tmp_path / f"{mode}.jpg"
    photo(5, (300, 200)).convert(mode).save(path, quality=85)
    with Image.open(path) as img:
        rgb = lin._rgb(img)
        through = np.asarray(img.convert("RGB"))
        assert rgb.mode == "RGB" and np.array_equal(np.asarray(rgb), through)
        g = np.asarray(Image.fromarray(through).convert("L").resize((32, 32), Image.Resampling.BILINEAR), np.float32)
        g -= g.mean()
        assert np.array_equal(lin._small(rgb), g / max(float(np.sqrt((g * g).mean())), 1e-6))


def test_a_large_pictures_reduction_is_box_reduced_first_and_still_the_same_picture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`_small` box-reduces a large picture before resampling it (`SMALL_REDUCE_TO`): the 32 x 32 reduction it
    gives correlates with the one from every pixel almost perfectly, far above what tells copies apart."""
    import numpy as np

    import photodedup.client.lineage as lin

    img = photo(9, (1200, 800))
    g = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.BILINEAR), np.float32)
    g -= g.mean()
    full = g / max(float(np.sqrt((g * g).mean())), 1e-6)
    factors: list[int] = []
    reduce = Image.Image.reduce

    def recorded(self, factor, *args, **kwargs):  # type: ignore[no-untyped-def]
        factors.append(factor)
        return reduce(self, factor, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "reduce", recorded)
    small = lin._small(img)
    assert factors == [800 // lin.SMALL_REDUCE_TO]  # reduced first, by a whole factor
    assert float((small * full).mean()) > 0.995


@pytest.mark.parametrize("k", range(8))
def test_a_window_of_the_turned_source_is_the_turned_crop_of_its_box(k: int) -> None:
    """Each way of the test reads windows, not whole frames: a window of the source turned into the
    destination's frame equals that window of the whole turned source, for every turn and mirror."""
    import numpy as np

    import photodedup.client.lineage as lin

    rng = np.random.default_rng(k)
    src = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)
    turned = lin._dihedral(src, k)
    dst = rng.integers(0, 256, turned.shape, dtype=np.uint8)
    frames = lin._Frames(Image.fromarray(src), Image.fromarray(dst), k)
    assert frames.shape == turned.shape[:2]
    for y0, x0, y1, x1 in [
        (0, 0, 16, 16),
        (5, 9, 30, 33),
        (0, 0, *turned.shape[:2]),
        (turned.shape[0] - 7, 3, turned.shape[0], 20),
    ]:
        s, d = frames.window(y0, x0, y1, x1)
        assert np.array_equal(s, turned[y0:y1, x0:x1]) and np.array_equal(d, dst[y0:y1, x0:x1])
    whole_src, whole_dst = frames.whole()
    assert np.array_equal(whole_src, turned) and np.array_equal(whole_dst, dst)


def test_same_pixels_looks_past_the_windows() -> None:
    """The shortcut for the same pixels compares windows first, then the whole: a difference outside every
    window still counts."""
    import numpy as np

    import photodedup.client.lineage as lin

    rng = np.random.default_rng(3)
    src = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    turned = lin._dihedral(src, 5)
    assert lin._Frames(Image.fromarray(src), Image.fromarray(turned.copy()), 5).same_pixels()
    inside = lin._windows(*turned.shape[:2])
    outside = turned.copy()
    y, x = next(
        (y, x)
        for y in range(outside.shape[0])
        for x in range(outside.shape[1])
        if not any(y0 <= y < y1 and x0 <= x < x1 for y0, x0, y1, x1 in inside)
    )
    outside[y, x] ^= 1
    assert not lin._Frames(Image.fromarray(src), Image.fromarray(outside), 5).same_pixels()
    inner = turned.copy()
    inner[inside[4][0] + 1, inside[4][1] + 1] ^= 1
    assert not lin._Frames(Image.fromarray(src), Image.fromarray(inner), 5).same_pixels()


def test_the_median_of_counted_values_is_numpys() -> None:
    """Odd totals take the middle value; even ones average the two middle values, as `np.median` does."""
    import numpy as np

    import photodedup.client.lineage as lin

    assert lin._median(np.array([2.0, 1.0]), np.array([2, 2])) == 1.5
    assert lin._median(np.array([2.0, 1.0, 7.0]), np.array([2, 2, 1])) == 2.0
    rng = np.random.default_rng(3)
    for _ in range(20):
        values, counts = rng.random(50), rng.integers(1, 3, 50)
        assert lin._median(values, counts) == np.median(np.repeat(values, counts))


@pytest.mark.parametrize("binned", [True, False], ids=["binned", "per-pixel"])
def test_a_toned_copy_is_still_told_either_way_the_curves_are_fitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binned: bool
) -> None:
    """A saturation and gamma edit saved with its source's tables, tested with each form of the fit: the same
    answer and the same errors (siblings take the cheaper form; a real copy must not lose its answer)."""
    import photodedup.client.lineage as lin

    source = _saved(photo(21, (480, 360)), tmp_path / "source.jpg", 90)
    edited = ImageEnhance.Color(Image.open(source).convert("RGB")).enhance(1.5)
    copy = _saved(edited.point(lambda v: int(255 * (v / 255) ** 0.8)), tmp_path / "copy.jpg", 90)
    monkeypatch.setattr(lin, "HISTOGRAM_CELLS", 0 if binned else 10**12)
    forward, backward = lineage(source, copy), lineage(copy, source)
    assert forward.source == 1 and backward.source == -1
    monkeypatch.setattr(lin, "HISTOGRAM_CELLS", 10**12 if binned else 0)
    assert lineage(source, copy) == forward and lineage(copy, source) == backward


def test_a_way_whose_saturation_choice_is_1x_keeps_its_plain_re_make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remakes: list[tuple[float, bool]]
) -> None:
    """When only one way fits a saturation change better, the 1x candidates (that way's own, and the other
    way's inverse of 1x) are not re-made: the same fit, so the same errors. Each way's best candidate counts."""
    import photodedup.client.lineage as lin

    source = _saved(photo(21, (480, 360)), tmp_path / "source.jpg", 90)
    copy = _saved(ImageEnhance.Brightness(Image.open(source).convert("RGB")).enhance(1.05), tmp_path / "c.jpg", 70)
    calls = remakes
    monkeypatch.setattr(lin, "_verdict", lambda *errors: 0)  # the plain stage leaves it open
    choices = iter([(1.0, False), (1.2, True)])  # to B: 1x; to A: a change after the curves
    monkeypatch.setattr(lin, "_choose_saturation", lambda src, dst: next(choices))
    answer = lineage(source, copy)
    assert calls[:2] == [(1.0, False), (1.0, False)]
    assert sorted(calls[2:]) == sorted([(1 / 1.2, False), (1.2, True)])  # the B way: 1x kept, the inverse tried
    frames = _frames(source, copy)
    assert answer.b_from_a == min(_remake_error(*frames), _remake_error(*frames, (1 / 1.2, False)))[0]


def _frames(source: str, copy: str):  # type: ignore[no-untyped-def]
    """(the way from source to copy, copy image): the arguments of re-making the copy from its source."""
    from photodedup.client.lineage import _Frames

    img = Image.open(copy)
    return _Frames(Image.open(source).convert("RGB"), img.convert("RGB"), 0), img


def _heic_pair(tmp_path: Path, turn: Image.Transpose | None = None) -> tuple[str, str]:
    """(a q80 JPEG of a made photo, a HEIC converted from it, turned by `turn`)."""
    pytest.importorskip("pillow_heif")
    from photodedup.imaging import register_heif

    register_heif()
    source = _saved(photo(21, (640, 480)), tmp_path / "source.jpg", 80)
    decoded = Image.open(source).convert("RGB")
    converted = tmp_path / "converted.heic"
    (decoded.transpose(turn) if turn else decoded).save(converted, "HEIF", quality=75)
    return source, str(converted)


@pytest.mark.parametrize("turn", [None, Image.Transpose.ROTATE_90], ids=["upright", "turned"])
def test_a_heic_converted_from_a_jpeg_was_made_from_it(tmp_path: Path, turn) -> None:  # type: ignore[no-untyped-def]
    """Its pixels keep the JPEG's 8 x 8 coefficients on that JPEG's quantisation lattice."""
    source, converted = _heic_pair(tmp_path, turn)
    assert lineage(source, converted).source == 1
    assert lineage(converted, source).source == -1


def test_a_photo_first_saved_as_heic_is_not_called_converted(tmp_path: Path) -> None:
    """A HEIC original and a JPEG exported from it: the HEIC's coefficients sit on no lattice, so the test
    says nothing either way (it never names the HEIC a copy of its own export)."""
    pytest.importorskip("pillow_heif")
    import numpy as np

    import photodedup.client.lineage as lin
    from photodedup.imaging import register_heif

    register_heif()
    native = tmp_path / "native.heic"
    photo(21, (640, 480)).save(native, "HEIF", quality=75)
    export = _saved(Image.open(native).convert("RGB"), tmp_path / "export.jpg", 80)
    assert lineage(str(native), export).source == 0
    assert lineage(export, str(native)).source == 0
    distance, measured = lin.lattice_distance(
        np.asarray(Image.open(native).convert("RGB")), Image.open(export).quantization[0]
    )
    assert measured >= lin.LATTICE_COEFFICIENTS and distance > lin.LATTICE_DISTANCE


def test_a_webp_conversion_says_nothing(tmp_path: Path) -> None:
    """WebP's conversion does not keep the JPEG's lattice (measured: copies 0.22-0.34, as far off as pictures
    first saved as WebP), so WebP is not tested."""
    source = _saved(photo(21, (640, 480)), tmp_path / "source.jpg", 80)
    converted = tmp_path / "converted.webp"
    Image.open(source).convert("RGB").save(converted, "WEBP", quality=80)
    assert lineage(source, str(converted)).source == 0
    assert lineage(str(converted), source).source == 0


def test_a_heic_keeper_converted_from_a_tied_jpeg_gives_way_to_it(tmp_path: Path) -> None:
    """The HEIC is the larger file of two that tie on every rule before size; the JPEG it was converted from
    is kept, whichever was found first."""
    source, converted = _heic_pair(tmp_path)
    config = GroupingConfig(near_threshold=4)
    heic = record(converted, format="HEIF", size=2000, quality=75, dhash=1)
    jpeg = record(source, format="JPEG", size=1000, quality=80)
    (group,) = find_groups([heic, jpeg], config)
    assert group.keep is heic
    (changed,) = prefer_sources([group], config)
    assert changed.keep is jpeg


def test_each_way_also_tries_the_inverse_of_the_other_ways_saturation_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A colour and curve edit whose saturation change the choice misses on the way to the copy (forced here;
    on the dev set a tone copy's choice missed it on a sample's mean error): the way to the copy still tries
    the inverse of the change found the other way, so the source is never named the copy for want of a
    candidate, and the inverse pair is what was tried."""
    import numpy as np

    import photodedup.client.lineage as lin

    source = _saved(photo(21, (480, 360)), tmp_path / "source.jpg", 90)
    edited = ImageEnhance.Color(Image.open(source).convert("RGB")).enhance(1.5)
    copy = _saved(edited.point(lambda v: int(255 * (v / 255) ** 0.8)), tmp_path / "copy.jpg", 90)
    copy_pixels = np.asarray(Image.open(copy).convert("RGB"))
    real_choice, real_remake = lin._choose_saturation, lin._remake_error
    found: list[tuple[float, bool]] = []
    tried: list[tuple[float, bool]] = []

    def missing_the_copys(src, dst, whole_family=False):  # type: ignore[no-untyped-def]
        chosen = real_choice(src, dst)
        found.append(chosen)
        return (1.0, False) if np.array_equal(dst, copy_pixels) else chosen

    def counted(frames, dst_image, saturation=(1.0, False)):  # type: ignore[no-untyped-def]
        tried.append(saturation)
        return real_remake(frames, dst_image, saturation)

    monkeypatch.setattr(lin, "_choose_saturation", missing_the_copys)
    monkeypatch.setattr(lin, "_remake_error", counted)
    assert lineage(source, copy).source != -1
    to_original = found[1]
    assert to_original != (1.0, False)
    assert lin._inverse(to_original) in tried[2:] and to_original in tried[2:]
    assert lin._inverse(lin._inverse(to_original)) == pytest.approx(to_original)


def test_curves_map_each_channel_through_its_own_rounded_table() -> None:
    import numpy as np

    from photodedup.client.lineage import _through

    rng = np.random.default_rng(8)
    src = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    curves = rng.random((256, 3)) * 300 - 20  # off the ends too: clipped to 0..255
    tables = np.clip(np.rint(curves), 0, 255).astype(np.uint8)
    want = np.stack([tables[src[..., c], c] for c in range(3)], axis=-1)
    assert np.array_equal(_through(curves, src), want)
