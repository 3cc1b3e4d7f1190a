"""Grouping behaviour: tiers, centre linkage (no chaining), ignore rules, keeper policy, search indexes."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest
from fakes import record

from photodedup.client.grouping import (
    FileRecord,
    GroupingConfig,
    Tier,
    cosine_pairs_ann,
    cosine_pairs_exact,
    find_groups,
    hamming_join_brute,
    hamming_join_mih,
    hamming_neighbours,
    is_weak,
    keeper_key,
    window_neighbours,
)
from photodedup.settings import Settings

CFG = GroupingConfig(near_threshold=10, similar_threshold=0.05)


def rec(path: str, md5: str | None = None, dh: int | None = 0, ph: int | None = 0, **kw: object) -> FileRecord:
    """A photo-sized record (a 100 px one is a weak picture, `test_weak_pictures_*`)."""
    kw.setdefault("width", 640)
    kw.setdefault("height", 480)
    return record(path, md5=md5 or f"md5-{path}", dhash=dh, phash=ph, **kw)


def flip(value: int, bits: range) -> int:
    for b in bits:
        value ^= 1 << b
    return value


def paths(groups: list) -> list[set[str]]:
    return [{m.record.path for m in g.members} for g in groups]


def test_exact_group_keeps_best_by_policy() -> None:
    files = [
        rec("/a/x.jpg", "m", width=50, height=50),
        rec("/b/x.jpg", "m"),
        rec("/c/x.jpg", "m"),
        rec("/d/y.jpg", "n", dh=-1, ph=-1),
    ]
    groups = find_groups(files, CFG)
    assert len(groups) == 1
    g = groups[0]
    assert g.kind == "exact" and g.keep.path == "/b/x.jpg"  # /a is smaller; /b and /c tie until path order
    assert {m.record.path for m in g.members} == {"/a/x.jpg", "/b/x.jpg", "/c/x.jpg"}
    assert all(m.distance == 0 for m in g.members)


def test_near_group_by_hamming_distance_of_both_hashes() -> None:
    a = rec("/a.jpg", dh=0, ph=0)
    b = rec("/b.jpg", dh=flip(0, range(5)), ph=flip(0, range(5)))  # 10 bits in all
    c = rec("/c.jpg", dh=flip(0, range(6)), ph=flip(0, range(5)))  # 11 bits
    groups = find_groups([a, b, c], CFG)
    assert paths(groups) == [{"/a.jpg", "/b.jpg"}]
    assert groups[0].kind == "near"
    assert groups[0].members[1].distance == 10


def test_signed_and_unsigned_hashes_compare_equal() -> None:
    a = rec("/a.jpg", dh=-1, ph=-2)
    b = rec("/b.jpg", dh=(1 << 64) - 1, ph=(1 << 64) - 2)
    assert paths(find_groups([a, b], CFG)) == [{"/a.jpg", "/b.jpg"}]


def test_no_chaining_every_member_is_within_threshold_of_the_keeper() -> None:
    a = rec("/a.jpg", dh=0, ph=0, width=300)  # best: the centre
    b = rec("/b.jpg", dh=flip(0, range(8)), ph=0, width=200)  # 8 from a
    c = rec("/c.jpg", dh=flip(0, range(16)), ph=0, width=100)  # 8 from b, 16 from a
    groups = find_groups([c, b, a], CFG)
    assert paths(groups) == [{"/a.jpg", "/b.jpg"}]
    assert groups[0].keep.path == "/a.jpg"


def test_exact_copies_join_a_near_group_as_one_unit() -> None:
    a1 = rec("/a1.jpg", "m", width=300)
    a2 = rec("/z/a2.jpg", "m", width=300)
    b = rec("/b.jpg", dh=flip(0, range(3)), width=200)
    groups = find_groups([b, a2, a1], CFG)
    assert len(groups) == 1
    g = groups[0]
    assert g.kind == "near" and g.keep.path == "/a1.jpg"
    tiers = {m.record.path: m.tier for m in g.members}
    assert tiers == {"/a1.jpg": Tier.EXACT, "/z/a2.jpg": Tier.EXACT, "/b.jpg": Tier.NEAR}
    assert g.members[0].record is g.keep and [m.record for m in g.targets] == [a2, b]


def test_each_file_in_at_most_one_group() -> None:
    rng = random.Random(3)
    files = []
    for k in range(60):
        base = rng.getrandbits(64)
        for v in range(rng.randint(1, 4)):
            files.append(
                rec(f"/{k}/{v}.jpg", f"m{k}-{v % 2}", dh=flip(base, rng.sample(range(64), rng.randint(0, 8))), ph=base)
            )
    seen: list[str] = []
    for g in find_groups(files, CFG):
        seen += [m.record.path for m in g.members]
    assert len(seen) == len(set(seen))


def test_ignored_pair_is_never_grouped() -> None:
    a = rec("/a.jpg", width=300)
    b = rec("/b.jpg", dh=1, width=200)
    assert find_groups([a, b], CFG, ignored=[frozenset({"/a.jpg", "/b.jpg"})]) == []


def test_ignored_pair_splits_a_group() -> None:
    a = rec("/a.jpg", width=300)
    b = rec("/b.jpg", dh=1, width=200)
    c = rec("/c.jpg", dh=2, width=100)
    groups = find_groups([a, b, c], CFG, ignored=[frozenset({"/a.jpg", "/b.jpg"})])
    for g in groups:
        assert not {"/a.jpg", "/b.jpg"} <= {m.record.path for m in g.members}
    assert {"/a.jpg", "/c.jpg"} in paths(groups)


def test_ignored_pair_of_exact_copies_is_split() -> None:
    a = rec("/a.jpg", "m")
    b = rec("/b.jpg", "m")
    c = rec("/c.jpg", "m")
    groups = find_groups([a, b, c], CFG, ignored=[frozenset({"/a.jpg", "/b.jpg"})])
    assert paths(groups) == [{"/a.jpg", "/c.jpg"}]


@pytest.mark.parametrize(
    ("policy", "winner"),
    [
        (("resolution", "size", "format", "oldest", "shortest_path"), "/big.jpg"),
        (("size", "resolution"), "/heavy.jpg"),
        (("format", "resolution"), "/photo.heic"),
        (("oldest", "resolution"), "/old.jpg"),
        (("shortest_path", "resolution"), "/s.jpg"),
    ],
)
def test_keeper_policy_order_is_configurable(policy: tuple[str, ...], winner: str) -> None:
    files = [
        rec("/big.jpg", width=400, height=300, size=100, mtime=100.0),
        rec("/heavy.jpg", width=200, height=150, size=900, mtime=100.0),
        rec("/photo.heic", width=200, height=150, size=100, format="HEIF", mtime=100.0),
        rec("/old.jpg", width=200, height=150, size=100, exif_time=10.0, mtime=99.0),
        rec("/s.jpg", width=200, height=150, size=100, mtime=50.0),
    ]
    files = [
        rec(f.path, "same", **{k: getattr(f, k) for k in ("width", "height", "size", "format", "exif_time", "mtime")})
        for f in files
    ]
    cfg = GroupingConfig(keep_policy=policy)
    groups = find_groups(files, cfg)
    assert groups[0].keep.path == winner


def test_keeper_policy_defaults_in_full_order() -> None:
    cfg = GroupingConfig()
    older_by_mtime = rec("/p/long/name.jpg", mtime=1.0)
    newer_exif = rec("/p/a.jpg", exif_time=5.0, mtime=0.0)
    assert keeper_key(older_by_mtime, cfg) < keeper_key(newer_exif, cfg)
    raw = rec("/x.dng", format="DNG")
    jpeg = rec("/x.jpg", format="JPEG")
    assert keeper_key(raw, cfg) < keeper_key(jpeg, cfg)
    with pytest.raises(ValueError):
        GroupingConfig(keep_policy=("prettiest",))


def test_reference_files_are_kept_and_protected(tmp_path) -> None:
    ref = tmp_path / "ref"
    small_ref = rec(str(ref / "a.jpg"), "m", width=200, height=150)
    other_ref = rec(str(ref / "sub" / "b.jpg"), "m", width=200, height=150)
    big = rec(str(tmp_path / "lib" / "a.jpg"), "m", width=1000, height=1000)
    near = rec(str(tmp_path / "lib" / "c.jpg"), dh=3)
    groups = find_groups([big, near, small_ref, other_ref], CFG, reference_dirs=[str(ref)])
    assert len(groups) == 1
    g = groups[0]
    assert g.keep.path == str(ref / "a.jpg")
    assert g.protected == {str(ref / "a.jpg"), str(ref / "sub" / "b.jpg")}
    assert {m.record.path for m in g.targets} == {big.path, near.path}


def test_rotated_copy_found_through_rotated_hashes() -> None:
    upright = rec("/up.jpg", dh=0x1234, ph=0x5678, width=300)
    rotated = rec("/rot.jpg", dh=-5, ph=-77, rotated_hashes=((0x1234, 0x5679),))
    assert paths(find_groups([upright, rotated], CFG)) == [{"/up.jpg", "/rot.jpg"}]
    # Order does not matter: the neighbour map is symmetric.
    upright2 = rec("/up.jpg", dh=0x1234, ph=0x5678, width=10)
    assert paths(find_groups([upright2, rotated], CFG)) == [{"/up.jpg", "/rot.jpg"}]
    assert find_groups([upright, rec("/rot.jpg", dh=-5, ph=-77)], CFG) == []


def test_similar_tier_merges_near_groups_by_embedding() -> None:
    rng = np.random.default_rng(0)
    e = rng.standard_normal(32).astype(np.float32)
    close = e + 0.01 * rng.standard_normal(32).astype(np.float32)
    far = rng.standard_normal(32).astype(np.float32)
    a = rec("/a.jpg", dh=0, embedding=e, width=1000)
    a_near = rec("/a2.jpg", dh=1, embedding=None, width=800)
    b = rec("/b.jpg", dh=-1, ph=-1, embedding=close)
    c = rec("/c.jpg", dh=0x0F0F0F0F, ph=-1, embedding=far)
    groups = find_groups([a, a_near, b, c], CFG)
    assert paths(groups) == [{"/a.jpg", "/a2.jpg", "/b.jpg"}]
    g = groups[0]
    assert g.kind == "similar"
    dist = {m.record.path: m.distance for m in g.members}
    assert 0 < dist["/b.jpg"] < 0.05


def test_similar_tier_has_no_chaining_either() -> None:
    x = np.array([1.0, 0.0], dtype=np.float32)
    ang = np.deg2rad(17)  # cos(17 deg) = 0.956: within 0.05 of each neighbour, 34 deg apart from the far one
    y = np.array([np.cos(ang), np.sin(ang)], dtype=np.float32)
    z = np.array([np.cos(2 * ang), np.sin(2 * ang)], dtype=np.float32)
    files = [
        rec("/x.jpg", dh=None, embedding=x, width=300),
        rec("/y.jpg", dh=None, embedding=y, width=200),
        rec("/z.jpg", dh=None, embedding=z, width=100),
    ]
    assert paths(find_groups(files, CFG)) == [{"/x.jpg", "/y.jpg"}]


@pytest.mark.parametrize("threshold", [0, 5, 12, 20, 31])
def test_multi_index_hashing_equals_brute_force(threshold: int) -> None:
    rng = random.Random(threshold)
    keys = []
    for _ in range(400):
        base = (rng.getrandbits(64), rng.getrandbits(64))
        keys.append(base)
        for _ in range(rng.randint(0, 3)):  # planted neighbours at all distances around the threshold
            bits = rng.sample(range(128), rng.randint(0, threshold + 4))
            d, p = base
            for b in bits:
                if b < 64:
                    d ^= 1 << b
                else:
                    p ^= 1 << (b - 64)
            keys.append((d, p))
    arr = np.array([[k[0], k[1]] for k in keys], dtype=np.uint64)
    brute = set(zip(*(a.tolist() for a in hamming_join_brute(arr, arr, threshold)), strict=True))
    mih = set(zip(*(a.tolist() for a in hamming_join_mih(arr, arr, threshold)), strict=True))
    assert mih == brute
    assert len(brute) > len(keys)  # the planted pairs are there, not just self-matches
    assert hamming_neighbours(keys, threshold, brute_force_max=0) == hamming_neighbours(keys, threshold)


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_narrowed_multi_index_search_answers_its_rule_exactly(radius: int) -> None:
    """With a substring radius, the indexed search finds exactly the pairs within the threshold that agree
    within `radius` bits on one 16-bit substring (as brute force says), every pair within 8 * (radius + 1) - 1
    bits among them, and fewer than the whole ball."""
    rng = random.Random(radius)
    keys = []
    for _ in range(300):
        base = (rng.getrandbits(64), rng.getrandbits(64))
        keys.append(base)
        for _ in range(rng.randint(1, 3)):
            d, p = base
            for b in rng.sample(range(128), rng.randint(0, 34)):
                if b < 64:
                    d ^= 1 << b
                else:
                    p ^= 1 << (b - 64)
            keys.append((d, p))
    arr = np.array(keys, dtype=np.uint64)

    def pairs(join: object, r: int | None) -> set[tuple[int, int, int]]:
        return set(zip(*(a.tolist() for a in join(arr, arr, 30, r)), strict=True))  # type: ignore[operator]

    narrowed = pairs(hamming_join_mih, radius)
    assert narrowed == pairs(hamming_join_brute, radius)
    whole = pairs(hamming_join_brute, None)
    assert narrowed < whole
    assert {p for p in whole if p[2] <= 8 * (radius + 1) - 1} <= narrowed


def test_multi_index_search_in_small_blocks_of_queries_finds_the_same_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The candidate arrays are built a block of queries at a time (their size grows with the square of the
    library); however small the blocks, the pairs are those of brute force."""
    from photodedup.client.grouping import hamming

    rng = random.Random(7)
    keys = []
    for _ in range(200):
        base = (rng.getrandbits(64), rng.getrandbits(64))
        keys += [base, (base[0] ^ (1 << rng.randrange(64)), base[1]), (base[0], base[1] ^ 0b1011)]
    keys += [(0, 0)] * 40  # one crowded bucket: a single query's candidates exceed a block
    arr = np.array(keys, dtype=np.uint64)
    whole = set(zip(*(a.tolist() for a in hamming_join_mih(arr, arr, 12, 1)), strict=True))
    monkeypatch.setattr(hamming, "_BLOCK_ENTRIES", 7)
    counts = np.array([3, 9, 0, 2, 2, 2, 1])
    blocks = hamming._blocks(counts, 7)
    assert [b for _, b in blocks[:-1]] == [a for a, _ in blocks[1:]] and blocks[0][0] == 0 and blocks[-1][1] == 7
    assert len(blocks) > 1 and all(counts[a:b].sum() <= 7 + counts[a:b].max() for a, b in blocks)
    blocked = set(zip(*(a.tolist() for a in hamming_join_mih(arr, arr, 12, 1)), strict=True))
    assert blocked == whole == set(zip(*(a.tolist() for a in hamming_join_brute(arr, arr, 12, 1)), strict=True))


def test_each_photo_keeps_its_closest_loose_candidates() -> None:
    """Unrelated photos meet the loose net at a rate that grows with the library: a photo's loose candidates
    beyond its hash neighbours are cut to its `loose_candidates` closest, a pair kept if either side keeps it,
    so verification grows with the photos, not with their pairs; its hash neighbours are not counted."""
    base = flip(0, range(40))
    crop = rec("/crop.jpg", dh=-1, ph=-1, windows=((base ^ 0b1, 0),))  # the original's window, 1 bit off
    original = rec("/orig.jpg", dh=0, ph=0, width=2000, windows=((0, 0), (base, 0)))
    copy = rec("/copy.jpg", dh=1, ph=0, width=1000, windows=((1, 0), (base ^ (1 << 63), 0)))
    # look-alikes: each meets the crop's frame with 3 to 6 bits, none the original or one another
    others = [
        rec(
            f"/other{k}.jpg",
            dh=0x5555 << k,
            ph=0x3333 << k,
            windows=((flip(7 << (8 * k), range(60, 64)), 0), (base ^ ((1 << (k + 3)) - 1), 0)),
        )
        for k in range(4)
    ]
    asked: list[tuple[str, str]] = []

    def verifier(x: FileRecord, y: FileRecord, strict: bool = False) -> bool:
        asked.append(tuple(sorted((x.path, y.path))))  # type: ignore[arg-type]
        return {x.path, y.path} <= {"/orig.jpg", "/crop.jpg", "/copy.jpg"}

    files = [original, copy, crop, *others]
    wide = GroupingConfig(near_threshold=10, candidate_threshold=12)
    assert paths(find_groups(files, wide, verifier=verifier)) == [{"/orig.jpg", "/copy.jpg", "/crop.jpg"}]
    every = set(asked)
    assert {p for p in every if "/other" in p[0] or "/other" in p[1]}  # the look-alikes were verified
    asked.clear()
    two = GroupingConfig(near_threshold=10, candidate_threshold=12, loose_candidates=2)
    assert paths(find_groups(files, two, verifier=verifier)) == [{"/orig.jpg", "/copy.jpg", "/crop.jpg"}]
    lookalikes = {p for p in asked if "/other" in p[0] or "/other" in p[1]}
    assert len(lookalikes) < len({p for p in every if "/other" in p[0] or "/other" in p[1]})


def test_window_search_reads_stored_window_arrays_as_int_pairs() -> None:
    """The index hands windows over as uint64 arrays, tests as int pairs: the loose search reads both alike."""
    windows = [((0, 0), (flip(0, range(40)), 0)), ((flip(0, range(40)) ^ 0b11, 0),), (((1 << 64) - 1, 5),)]
    as_arrays = [np.array(w, dtype=np.uint64) for w in windows]
    expected = {0: {1: 2.0}, 1: {0: 2.0}}
    for brute_max in (0, 2048):
        assert window_neighbours(windows, 12, brute_max, radius=1) == expected
        assert window_neighbours(as_arrays, 12, brute_max, radius=1) == expected


def test_window_search_in_parts_of_the_table_finds_the_same_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The window table is searched a part of the records at a time (its size grows with the library, the
    parts do not): however small the parts, the neighbours are those of one search of the whole table."""
    from photodedup.client.grouping import hamming

    rng = random.Random(11)
    windows: list[bytes | tuple[tuple[int, int], ...]] = []
    previous: list[tuple[int, int]] = [(0, 0)]
    for k in range(300):
        own = [(rng.getrandbits(64), rng.getrandbits(64)) for _ in range(rng.randrange(1, 9))]
        if k % 3 == 1:  # a crop: its frame is one of the picture before's windows, a few bits off
            d, p = rng.choice(previous)
            own[0] = (d ^ 0b101, p)
        previous = own
        windows.append(tuple(own) if k % 2 else np.array(own, dtype=np.uint64).tobytes())
        if k % 7 == 0:
            windows.append(())  # records without windows are skipped, whichever part they fall in
    for brute_max in (0, 1 << 20):
        whole = window_neighbours(windows, 12, brute_max, radius=1)
        assert sum(len(row) for row in whole.values()) >= 2 * 90
        monkeypatch.setattr(hamming, "_PART_WINDOWS", 5)
        assert window_neighbours(windows, 12, brute_max, radius=1) == whole
        monkeypatch.undo()


def test_loose_candidates_kept_on_arrays_are_those_of_the_rule_on_dicts() -> None:
    """Each picture's closest loose candidates, chosen on the join's arrays (a large library's pairs pass a
    million), are the ones the rule picks row by row: a photo ranks its candidates without its hash
    neighbours, a weak picture ranks them all, closest first and ties by index; a pair between photos is
    kept when either side keeps it, one with a weak picture only when every weak side does."""
    from photodedup.client.grouping.cluster import closest
    from photodedup.client.grouping.hamming import symmetric_pairs
    from photodedup.client.grouping.near import _closest_candidates

    config = dataclasses.replace(GroupingConfig.from_settings(Settings()), loose_candidates=3, weak_candidates=2)
    rng = random.Random(5)
    n = 60
    owners = [record(f"p{k}", contrast=1.0 if k % 9 == 0 else 40.0) for k in range(n)]
    found = [(rng.randrange(n), rng.randrange(n), rng.randrange(20, 31)) for _ in range(700)]
    a, b, d = symmetric_pairs(*(np.array(col, dtype=np.int64) for col in zip(*found, strict=True)))
    loose: dict[int, dict[int, float]] = {}
    for x, y, dist in zip(a.tolist(), b.tolist(), d.tolist(), strict=True):
        loose.setdefault(x, {})[y] = float(dist)
    hashed_pairs = {(x, y) for x, y in zip(a.tolist(), b.tolist(), strict=True) if (x * 7 + y * 7) % 11 == 0}
    hashed = np.array([(x, y) in hashed_pairs for x, y in zip(a.tolist(), b.tolist(), strict=True)])

    # The rule as it was written on dicts, kept here as the reference.
    weak = {x: is_weak(owners[x], config) for x in loose}
    top = {
        x: closest(row, config.weak_candidates)
        if weak[x]
        else closest({y: dist for y, dist in row.items() if (x, y) not in hashed_pairs}, config.loose_candidates)
        for x, row in loose.items()
    }

    def kept(x: int, y: int) -> bool:
        if weak[x] or weak[y]:
            return (not weak[x] or y in top[x]) and (not weak[y] or x in top[y])
        return y in top[x] or x in top[y]

    expected = {(x, y) for x, row in loose.items() for y in row if kept(x, y)}
    keep = _closest_candidates((a, b, d), owners, hashed, config)
    got = {(x, y) for x, y, k in zip(a.tolist(), b.tolist(), keep.tolist(), strict=True) if k}
    assert any(weak.values()) and 100 < len(expected) < len(a)
    assert got == expected


def test_ann_finds_what_exact_search_finds_on_small_data() -> None:
    rng = np.random.default_rng(1)
    base = rng.standard_normal((3000, 128)).astype(np.float32)
    dup = base[:500] + 0.15 * rng.standard_normal((500, 128)).astype(np.float32)
    vectors = np.concatenate([base, dup])
    exact = set(zip(*(a.tolist() for a in cosine_pairs_exact(vectors, 0.05)[:2]), strict=True))
    ann = set(zip(*(a.tolist() for a in cosine_pairs_ann(vectors, 0.05)[:2]), strict=True))
    assert len(exact) >= 450
    assert ann <= exact  # every ANN pair is checked on the full vectors
    assert len(ann & exact) / len(exact) >= 0.98


def test_ann_has_no_cap_on_copies_per_photo() -> None:
    rng = np.random.default_rng(4)
    base = rng.standard_normal((2000, 64)).astype(np.float32)
    burst = base[0] + 0.02 * rng.standard_normal((60, 64)).astype(np.float32)  # 60 copies of one photo
    vectors = np.concatenate([base, burst])
    exact = set(zip(*(a.tolist() for a in cosine_pairs_exact(vectors, 0.01)[:2]), strict=True))
    ann = set(zip(*(a.tolist() for a in cosine_pairs_ann(vectors, 0.01)[:2]), strict=True))
    assert len(exact) >= 60 * 61 // 2
    assert ann == exact


def test_find_groups_uses_ann_above_threshold() -> None:
    rng = np.random.default_rng(2)
    base = rng.standard_normal((300, 64)).astype(np.float32)
    files = [rec(f"/{i}.jpg", dh=None, embedding=v) for i, v in enumerate(base)]
    files.append(rec("/dup.jpg", dh=None, embedding=base[7] * 1.01, width=10))
    cfg = GroupingConfig(similar_threshold=0.01, ann_threshold=100)
    assert paths(find_groups(files, cfg)) == [{"/7.jpg", "/dup.jpg"}]


def test_config_from_settings() -> None:
    s = Settings(near_threshold=7, similar_threshold=0.2, keep_policy="size,oldest", ann_threshold=5)
    cfg = GroupingConfig.from_settings(s)
    assert (cfg.near_threshold, cfg.similar_threshold, cfg.keep_policy, cfg.ann_threshold) == (
        7,
        0.2,
        ("size", "oldest"),
        5,
    )


def test_the_similar_threshold_is_calibrated_per_model() -> None:
    """Unset, the similar threshold is the one calibrated for the scan's model; a model without one (random
    weights, the tiny test config) gets no similar tier, and a threshold given by the user always applies."""
    from photodedup.client.grouping.config import calibrated_similar_threshold, similar_off_reason

    for model_id in ("ViT-B-32@laion2b_s34b_b79k", "ViT-B-32@openai+int8", "ViT-B-32@file-0123abcd"):
        assert calibrated_similar_threshold(model_id) == 0.01
        assert GroupingConfig.from_settings(Settings(), model_id).similar_threshold == 0.01
    tiny = "photodedup-tiny@random-seed0-torch2.5.1"
    for model_id in (tiny, "ViT-B-32@random-seed0-torch2.5.1", "ViT-L-14@openai", None):
        assert calibrated_similar_threshold(model_id) is None
        assert GroupingConfig.from_settings(Settings(), model_id).similar_threshold is None
    assert GroupingConfig.from_settings(Settings(similar_threshold=0.3), tiny).similar_threshold == 0.3
    line = similar_off_reason(tiny)
    assert line.startswith(f"similar tier skipped: {tiny} ") and "random weights" in line and "\n" not in line


def test_no_similar_threshold_no_similar_tier() -> None:
    """Embeddings that would join (and, failing verification, be offered as a series) group nothing without a
    threshold; the hash tiers are untouched."""
    e = np.eye(4, dtype=np.float32)
    files = [
        rec("/a/original.jpg", dh=0, ph=0, embedding=e[0], width=1000),
        rec("/a/resaved.jpg", dh=1, ph=0, embedding=e[0]),
        rec("/b/shot1.jpg", dh=-1, ph=-1, embedding=e[0] + 0.01 * e[1], width=900),
        rec("/b/shot2.jpg", dh=0x0F0F0F0F, ph=0x0F0F, embedding=e[0] + 0.01 * e[2]),
    ]
    off = GroupingConfig(near_threshold=10, similar_threshold=None)
    for verifier in (None, lambda a, b, strict=False: False):
        groups = find_groups(files, off, verifier=verifier)
        assert [(g.kind, {m.record.path for m in g.members}) for g in groups] == [
            (Tier.NEAR, {"/a/original.jpg", "/a/resaved.jpg"})
        ]
    on = GroupingConfig(near_threshold=10, similar_threshold=0.05)
    assert Tier.SIMILAR in {g.kind for g in find_groups(files, on)}


def test_no_chaining_across_tiers() -> None:
    """X~A by embedding, A~B by perceptual hash, but B is unrelated to X by embedding: B must not join X."""
    from photodedup.client.grouping import FileRecord, GroupingConfig, find_groups

    def rec(path: str, dhash: int, phash: int, emb: list[float], width: int) -> FileRecord:
        return FileRecord(path, 1000, width, width, path, dhash, phash, np.asarray(emb, np.float32), None, 0.0, "JPEG")

    far_bits = (1 << 64) - 1
    x = rec("/x.jpg", 0, 0, [1.0, 0.0, 0.0], 400)  # best by resolution: the keeper
    a = rec("/a.jpg", far_bits, far_bits, [0.995, 0.0998, 0.0], 300)  # cosine distance 0.005 to x
    b = rec("/b.jpg", far_bits ^ 0xFF, far_bits, [0.0, 0.0, 1.0], 200)  # 8 bits from a; orthogonal to x
    groups = find_groups([x, a, b], GroupingConfig(near_threshold=20, similar_threshold=0.01))
    for g in groups:
        paths = {m.record.path for m in g.members}
        assert not ({"/x.jpg", "/b.jpg"} <= paths), [(m.record.path, m.tier, m.distance) for m in g.members]
    assert any({m.record.path for m in g.members} == {"/a.jpg", "/b.jpg"} for g in groups)


# ------------------------------------------------------------------------------- verification, series


def test_loose_window_candidates_join_only_when_verified() -> None:
    """A crop's full frame near a window of its original is a candidate; the verifier decides."""
    a = rec("/a.jpg", dh=0, ph=0, windows=((0, 0), (flip(0, range(40)), 0), (flip(0, range(64, 80)), 0)))
    crop = rec("/crop.jpg", dh=-1, ph=-1, windows=((flip(0, range(40)) ^ 0b111, 0),))
    asked: list[tuple[str, str]] = []

    def verifier(x: FileRecord, y: FileRecord) -> bool:
        asked.append((x.path, y.path))
        return answer

    answer = True
    groups = find_groups([a, crop], GroupingConfig(near_threshold=10, candidate_threshold=12), verifier=verifier)
    assert paths(groups) == [{"/a.jpg", "/crop.jpg"}] and asked == [("/a.jpg", "/crop.jpg")]
    assert groups[0].kind is Tier.NEAR
    answer = False
    assert find_groups([a, crop], GroupingConfig(near_threshold=10, candidate_threshold=12), verifier=verifier) == []
    # Without a verifier the loose net is not cast at all.
    assert find_groups([a, crop], GroupingConfig(near_threshold=10, candidate_threshold=12)) == []


def test_a_copy_of_a_copy_is_a_candidate_of_the_centre_verified_against_it() -> None:
    """A crop that meets only a copy of the keeper (not the keeper) is still found, but the verifier is asked
    about the crop and the keeper itself: membership never chains."""
    keep = rec("/keep.jpg", dh=0, ph=0, width=2000, windows=((0, 0),))
    copy = rec("/copy.jpg", dh=1, ph=0, windows=((1, 0), (flip(0, range(40)), 0)))
    crop = rec("/crop.jpg", dh=-1, ph=-1, windows=((flip(0, range(40)) ^ 0b11, 0),))
    asked: list[tuple[str, str]] = []

    def verifier(x: FileRecord, y: FileRecord, strict: bool = False) -> bool:
        asked.append((x.path, y.path))
        return answer

    cfg = GroupingConfig(near_threshold=10, candidate_threshold=12)
    answer = True
    groups = find_groups([keep, copy, crop], cfg, verifier=verifier)
    assert paths(groups) == [{"/keep.jpg", "/copy.jpg", "/crop.jpg"}] and asked == [("/keep.jpg", "/crop.jpg")]
    answer = False
    assert paths(find_groups([keep, copy, crop], cfg, verifier=verifier)) == [{"/keep.jpg", "/copy.jpg"}]


def test_a_neighbour_that_failed_verification_is_no_way_to_a_copy_of_a_copy() -> None:
    """The second hop walks only through what joined the centre: a loose candidate rejected by the verifier
    is another picture, and its own neighbours are not asked about against the centre (on a library of look-alike
    photos those pairs were half of all verification, and none was a copy)."""
    keep = rec("/keep.jpg", dh=0, ph=0, width=2000, windows=((0, 0), (flip(0, range(40)), 0)))
    other = rec("/other.jpg", dh=-1, ph=-1, windows=((flip(0, range(40)) ^ 0b1, 0), (flip(-1, range(30)), 0)))
    beyond = rec("/beyond.jpg", dh=0x0F0F, ph=-7, windows=((flip(-1, range(30)) ^ 0b11, 0),))
    asked: list[tuple[str, str]] = []

    def verifier(x: FileRecord, y: FileRecord, strict: bool = False) -> bool:
        asked.append((x.path, y.path))
        return {x.path, y.path} == {"/other.jpg", "/beyond.jpg"}

    cfg = GroupingConfig(near_threshold=10, candidate_threshold=12)
    groups = find_groups([keep, other, beyond], cfg, verifier=verifier)
    assert paths(groups) == [{"/other.jpg", "/beyond.jpg"}]
    assert ("/keep.jpg", "/beyond.jpg") not in asked and ("/beyond.jpg", "/keep.jpg") not in asked
    assert asked[0] == ("/keep.jpg", "/other.jpg")


def test_weak_pictures_keep_only_their_closest_loose_candidates() -> None:
    """Screens of one app (low contrast) are all loose candidates of one another: verification must stay linear
    in them. (Icon-sized pictures cast no loose net at all.)"""
    n = 40
    icons = [rec(f"/shots/{k}.png", dh=(1 << 63) >> k, ph=k << 40, contrast=5.0, windows=((k, 0),)) for k in range(n)]
    tiny = [
        rec(f"/icons/{k}.png", dh=(1 << 63) >> k, ph=k << 40, width=48, height=48, windows=((k, 0),)) for k in range(n)
    ]
    calls: list[tuple[str, str]] = []

    def verifier(a: FileRecord, b: FileRecord, strict: bool = False) -> bool:
        calls.append((a.path, b.path))
        return False

    cfg = GroupingConfig(near_threshold=1, candidate_threshold=30, weak_candidates=3)
    assert find_groups(icons, cfg, verifier=verifier) == []
    assert 0 < len(calls) <= n * cfg.weak_candidates
    everything = GroupingConfig(near_threshold=1, candidate_threshold=30, weak_candidates=n)
    calls.clear()
    find_groups(icons, everything, verifier=verifier)
    assert len(calls) > n * cfg.weak_candidates
    calls.clear()
    assert find_groups(tiny, everything, verifier=verifier) == [] and calls == []


def test_similar_neighbours_that_fail_verification_are_a_series_never_a_target() -> None:
    e = np.eye(4, dtype=np.float32)
    a = rec("/burst1.jpg", dh=0, ph=0, embedding=e[0], width=1000)
    b = rec("/burst2.jpg", dh=-1, ph=-1, embedding=e[0] + 0.01 * e[1])
    cfg = GroupingConfig(near_threshold=10, similar_threshold=0.05)
    series = find_groups([a, b], cfg, verifier=lambda x, y: False)
    assert len(series) == 1 and series[0].kind is Tier.SERIES and series[0].targets == []
    assert {m.tier for m in series[0].members[1:]} == {Tier.SERIES}
    same = find_groups([a, b], cfg, verifier=lambda x, y: True)
    assert same[0].kind is Tier.SIMILAR and [m.record.path for m in same[0].targets] == ["/burst2.jpg"]


def test_a_series_never_swallows_a_group_of_copies() -> None:
    """Neighbours by embedding that verification rejects are a series (never acted on); a group of copies whose
    keeper is such a neighbour stays a group of copies, acted on as before: with a model whose embeddings say
    little (random weights) every near group had become part of one series."""
    e = np.eye(4, dtype=np.float32)
    original = rec("/a/original.jpg", dh=0, ph=0, embedding=e[0], width=1000)
    resaved = rec("/a/resaved.jpg", dh=1, ph=0, embedding=e[0])
    shot1 = rec("/b/shot1.jpg", dh=-1, ph=-1, embedding=e[0] + 0.01 * e[1], width=900)
    shot2 = rec("/b/shot2.jpg", dh=0x0F0F0F0F, ph=0x0F0F, embedding=e[0] + 0.01 * e[2])
    cfg = GroupingConfig(near_threshold=10, similar_threshold=0.05)
    groups = find_groups([original, resaved, shot1, shot2], cfg, verifier=lambda a, b, strict=False: False)
    kinds = {g.kind: {m.record.path for m in g.members} for g in groups}
    assert kinds == {Tier.NEAR: {"/a/original.jpg", "/a/resaved.jpg"}, Tier.SERIES: {"/b/shot1.jpg", "/b/shot2.jpg"}}


def test_each_picture_verifies_only_its_closest_similar_neighbours() -> None:
    """Every similar neighbour is verified: a picture's are cut to its `loose_candidates` closest (a pair kept if
    either side keeps it), so a folder whose embeddings all meet costs a few checks a picture, not its pairs."""
    rng = np.random.default_rng(0)
    base = np.eye(8, dtype=np.float32)[0]
    files = [
        rec(
            f"/s/{k}.jpg",
            dh=k * 0x0101010101010101,
            ph=-k,
            embedding=base + 0.001 * rng.standard_normal(8).astype(np.float32),
        )
        for k in range(30)
    ]
    asked: list[tuple[str, str]] = []

    def verifier(a: FileRecord, b: FileRecord, strict: bool = False) -> bool:
        asked.append((a.path, b.path))
        return False

    cfg = GroupingConfig(near_threshold=0, similar_threshold=0.05, loose_candidates=3)
    find_groups(files, cfg, verifier=verifier)
    assert 0 < len(set(asked)) <= 3 * len(files) < 30 * 29 // 2


def test_weak_pictures_join_only_through_the_strict_check() -> None:
    """Tiny or low-contrast pictures: identical hashes are not enough; the verifier's strict check decides."""
    icon_a = rec("/icons/save.png", dh=0, ph=0, width=48, height=48)
    icon_b = rec("/icons/save-as.png", dh=1, ph=0, width=48, height=48)
    sky_a = rec("/sky/a.jpg", dh=-1, ph=-1, contrast=6.0)
    sky_b = rec("/sky/b.jpg", dh=-1, ph=-2, contrast=6.5)
    photo_a, photo_b = (
        rec("/p/a.jpg", dh=0xFF00FF, ph=7, contrast=40.0),
        rec("/p/b.jpg", dh=0xFF00FF, ph=6, contrast=41.0),
    )
    files = [icon_a, icon_b, sky_a, sky_b, photo_a, photo_b]
    assert is_weak(icon_a, CFG) and is_weak(sky_a, CFG) and not is_weak(photo_a, CFG)
    # Without a verifier only the photos group: nothing can vouch for the weak pairs.
    assert paths(find_groups(files, CFG)) == [{"/p/a.jpg", "/p/b.jpg"}]
    asked: list[tuple[str, str, bool]] = []

    def verifier(a: FileRecord, b: FileRecord, strict: bool = False) -> bool:
        asked.append((a.path, b.path, strict))
        return "sky" in a.path

    groups = find_groups(files, CFG, verifier=verifier)
    assert paths(groups) == [{"/p/a.jpg", "/p/b.jpg"}, {"/sky/a.jpg", "/sky/b.jpg"}]
    assert {(Path(a).parent.name, strict) for a, _, strict in asked} == {("icons", True), ("sky", True)}


def test_icon_sized_pairs_join_only_through_the_strict_check() -> None:
    """Two pictures both under `icon_side` (a theme's 64 and 96 px glyphs) are decided by the strict check,
    even with identical hashes; an icon-sized thumbnail of a photo still joins the photo on hashes alone."""
    cfg = GroupingConfig(near_threshold=10)
    assert cfg.icon_side == 128  # the default
    glyph_a = rec("/icons/96/battery-low.png", dh=0, ph=0, width=96, height=96)
    glyph_b = rec("/icons/64/battery-full.png", dh=1, ph=0, width=64, height=64)
    assert not is_weak(glyph_a, cfg)  # not weak alone: only the pair is icon-sized
    assert find_groups([glyph_a, glyph_b], cfg) == []
    asked: list[tuple[str, str, bool]] = []

    def verifier(a: FileRecord, b: FileRecord, strict: bool = False) -> bool:
        asked.append((a.path, b.path, strict))
        return answer

    for answer in (False, True):
        asked.clear()
        groups = find_groups([glyph_a, glyph_b], cfg, verifier=verifier)
        assert asked == [("/icons/96/battery-low.png", "/icons/64/battery-full.png", True)]
        assert paths(groups) == ([{glyph_a.path, glyph_b.path}] if answer else [])
    photo = rec("/p/photo.jpg", dh=0, ph=0, width=1200, height=900)
    thumb = rec("/p/thumb.jpg", dh=1, ph=0, width=96, height=72)
    asked.clear()
    assert paths(find_groups([photo, thumb], cfg, verifier=verifier)) == [{photo.path, thumb.path}] and asked == []
    assert paths(find_groups([glyph_a, glyph_b], GroupingConfig(near_threshold=10, icon_side=0))) == [
        {glyph_a.path, glyph_b.path}
    ]


def test_icon_sized_pictures_are_no_loose_candidates_of_one_another_nor_a_second_hop() -> None:
    """A theme's glyphs meet one another's windows and hashes everywhere: between two icon-sized pictures the
    loose net casts nothing, and no copy of a copy is walked through an icon-sized picture."""
    cfg = GroupingConfig(near_threshold=10, candidate_threshold=12)
    asked: list[tuple[str, str]] = []

    def verifier(a: FileRecord, b: FileRecord, strict: bool = False) -> bool:
        asked.append((a.path, b.path))
        return False

    windows = ((0, 0), (flip(0, range(40)), 0))
    glyph = rec("/icons/a.png", dh=0, ph=0, width=96, height=96, windows=windows)
    crop = rec("/icons/b.png", dh=-1, ph=-1, width=64, height=64, windows=((flip(0, range(40)) ^ 0b111, 0),))
    assert find_groups([glyph, crop], cfg, verifier=verifier) == [] and asked == []
    large = rec("/p/a.jpg", dh=0, ph=0, width=640, height=480, windows=windows)
    find_groups([large, crop], cfg, verifier=verifier)
    assert asked == [("/p/a.jpg", "/icons/b.png")]  # a picture at least `icon_side` px still casts it
    # The copy-of-a-copy hop (`test_a_copy_of_a_copy_is_a_candidate_of_the_centre_verified_against_it`) is not
    # walked through an icon-sized copy: the crop is asked about against that copy only.
    keep = rec("/keep.jpg", dh=0, ph=0, width=2000, windows=((0, 0),))
    copy = rec("/copy.jpg", dh=1, ph=0, width=100, height=75, windows=((1, 0), (flip(0, range(40)), 0)))
    far = rec("/crop.jpg", dh=-1, ph=-1, windows=((flip(0, range(40)) ^ 0b11, 0),))
    asked.clear()
    assert paths(find_groups([keep, copy, far], cfg, verifier=verifier)) == [{"/keep.jpg", "/copy.jpg"}]
    assert ("/keep.jpg", "/crop.jpg") not in asked and ("/crop.jpg", "/keep.jpg") not in asked


def test_a_pixel_turn_counts_only_for_asymmetric_pictures_clearly_closer_turned() -> None:
    up = rec("/up.jpg", dh=0x1234, ph=0x5678, rotated_hashes=((-1, -1),))
    turned = rec("/turned.jpg", dh=-5, ph=-77, rotated_hashes=((0x1234, 0x5679),))
    assert paths(find_groups([up, turned], CFG)) == [{"/up.jpg", "/turned.jpg"}]
    # Weak (icon-sized): a turned arrow is another arrow.
    small = rec("/turned.jpg", dh=-5, ph=-77, rotated_hashes=((0x1234, 0x5679),), width=48, height=48)
    assert find_groups([up, small], CFG) == []
    # Turn-symmetric: the picture looks like its own turn, so matching turned says nothing.
    symmetric = rec("/up.jpg", dh=0x1234, ph=0x5678, rotated_hashes=((0x1234, 0x5670),))
    assert find_groups([symmetric, turned], CFG) == []
    # Not clearly closer turned than as it is: the pair joins (or not) by its unturned distance alone.
    other = rec("/other.jpg", dh=0x1234, ph=0x5678 ^ 0x1FF, rotated_hashes=((0x1234, 0x5678 ^ 0x1F),))  # 9 / 5 bits
    loose = GroupingConfig(near_threshold=10, turn_asymmetry=0)
    assert [m.distance for m in find_groups([up, other], loose)[0].members] == [0.0, 9.0]
    no_margin = GroupingConfig(near_threshold=10, turn_asymmetry=0, turn_margin=0)
    assert [m.distance for m in find_groups([up, other], no_margin)[0].members] == [0.0, 5.0]


def test_min_pixels_leaves_small_pictures_to_exact_grouping() -> None:
    big, copy = rec("/a.jpg", dh=0), rec("/b.jpg", dh=1)
    tiny, tiny_copy = rec("/t.jpg", "same", width=30, height=30), rec("/t2.jpg", "same", width=30, height=30)
    cfg = GroupingConfig(near_threshold=10, min_pixels=64 * 64)
    assert paths(find_groups([big, copy, tiny, tiny_copy], cfg)) == [{"/t.jpg", "/t2.jpg"}, {"/a.jpg", "/b.jpg"}]
    assert paths(find_groups([big, copy], GroupingConfig(near_threshold=10, min_pixels=1000 * 1000))) == []


def test_many_resaves_of_one_picture_are_one_unit_before_the_near_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-saves with identical hashes (distinct bytes) join the best of them at distance 0 up front: the near
    tier's neighbour lists and second hop no longer grow with the square and cube of their number."""
    import photodedup.client.grouping.near as near

    seen: list[int] = []
    real = near.centre_cluster
    monkeypatch.setattr(near, "centre_cluster", lambda items, *a, **k: seen.append(len(items)) or real(items, *a, **k))
    windows = ((5, 6), (7, 8), (9, 10))
    resaves = [record(f"/r/{i:03d}.jpg", dhash=5, phash=6, windows=windows, mtime=float(i)) for i in range(300)]
    near = record("/r/near.jpg", dhash=5 ^ 0b111, phash=6, windows=((5 ^ 0b111, 6),))
    other = record("/r/other.jpg", dhash=0xFFFF_FFFF_FFFF_FF00, phash=0xFFFF_FFFF_0000_FFFF)
    groups = find_groups([*resaves, near, other], CFG)
    assert seen[0] == 3  # the re-saves, the near copy, the other photo
    (group,) = groups
    assert group.keep.path == "/r/000.jpg" and len(group.members) == 301
    tiers = {m.record.path: (m.tier, m.distance) for m in group.members}
    assert tiers["/r/150.jpg"] == (Tier.NEAR, 0.0) and tiers["/r/near.jpg"][1] == 3.0


def test_identical_hashes_still_honour_not_duplicates_and_weak_pictures() -> None:
    a, b, c = (record(f"/s/{n}.jpg", dhash=5, phash=6, mtime=float(i)) for i, n in enumerate("abc"))
    (group,) = find_groups([a, b, c], CFG, ignored=[frozenset({"/s/a.jpg", "/s/b.jpg"})])
    assert {m.record.path for m in group.members} == {"/s/a.jpg", "/s/c.jpg"}
    asked: list[bool] = []

    def strict_says_no(x: FileRecord, y: FileRecord, strict: bool = False) -> object:
        from photodedup.client.verify import Verdict

        asked.append(strict)
        return Verdict(False, 0, 0.0, 1.0, "", None, False, "strict")

    flat = [record(f"/t/{i}.png", dhash=5, phash=6, contrast=1.0) for i in range(3)]  # pages: weak pictures
    assert find_groups(flat, CFG, verifier=strict_says_no) == []
    assert asked and all(asked)


def test_later_centres_no_free_item_can_take_are_checked_ahead_too() -> None:
    """While a centre's own checks run, the verifier also hears those of the next items that no free item
    before them could take (they will be centres), so every core works even when each centre has one
    candidate; an item a free better one may still take is not checked ahead (its checks may never come)."""
    heard: list[list[tuple[str, str]]] = []

    class Ahead:
        def prefetch(self, pairs: list[tuple[FileRecord, FileRecord, bool]]) -> None:
            heard.append([(a.path, b.path) for a, b, _ in pairs])

        def __call__(self, a: FileRecord, b: FileRecord, strict: bool = False) -> bool:
            return a.path[3] == b.path[3]  # /w/a-1 and /w/a-2 are one page, /w/b-* another

    pages = [
        record("/w/a-1.png", dhash=0, phash=0, contrast=1.0),
        record("/w/a-2.png", dhash=1, phash=0, contrast=1.0),
        record("/w/b-1.png", dhash=-1, phash=-1, contrast=1.0),
        record("/w/b-2.png", dhash=-2, phash=-1, contrast=1.0),
    ]
    groups = find_groups(pages, CFG, verifier=Ahead())
    assert paths(groups) == [{"/w/a-1.png", "/w/a-2.png"}, {"/w/b-1.png", "/w/b-2.png"}]
    assert heard[0] == [("/w/a-1.png", "/w/a-2.png"), ("/w/b-1.png", "/w/b-2.png")]
    assert all(a != "/w/b-2.png" for call in heard for a, _ in call)  # b-1 is before it and free: not ahead


def test_a_centres_checks_are_handed_to_the_verifier_ahead_and_then_asked() -> None:
    """A verifier that can answer ahead (`prefetch`) hears each centre's checks before they are asked, and
    the groups are those of a verifier that cannot."""
    ahead: list[tuple[str, str, bool]] = []
    asked: list[tuple[str, str, bool]] = []

    class Ahead:
        def prefetch(self, pairs: list[tuple[FileRecord, FileRecord, bool]]) -> None:
            ahead.extend((a.path, b.path, s) for a, b, s in pairs)

        def __call__(self, a: FileRecord, b: FileRecord, strict: bool = False) -> bool:
            asked.append((a.path, b.path, strict))
            return a.path[-5] in "ab" and b.path[-5] in "ab"  # a and b are one page, c another

    pages = [record(f"/w/page-{c}.png", dhash=i, phash=0, contrast=1.0) for i, c in enumerate("abc")]
    plain = find_groups(pages, CFG, verifier=lambda a, b, strict=False: Ahead()(a, b, strict))
    asked.clear()
    groups = find_groups(pages, CFG, verifier=Ahead())
    assert groups == plain and [sorted(m.record.path for m in g.members) for g in groups] == [
        ["/w/page-a.png", "/w/page-b.png"]
    ]
    assert asked and set(asked) <= set(ahead) and all(s for *_, s in asked)


def test_neighbour_rows_on_arrays_read_as_the_dicts_they_replace() -> None:
    """The near tier's rows (hash neighbours and kept loose pairs) are held as arrays: each row reads back as
    the dict it was, a missing one as the default."""
    from photodedup.client.grouping.near import NeighbourRows

    rows = {3: {1: 4.0, 7: 2.0}, 1: {3: 4.0}}
    loose = (np.array([3, 9, 0]), np.array([9, 3, 5]), np.array([25, 25, 30]))
    got = NeighbourRows.of(rows, *loose)
    assert got.get(3, {}) == {1: 4.0, 7: 2.0, 9: 25.0}
    assert got.get(1, {}) == {3: 4.0} and got.get(9, {}) == {3: 25.0} and got.get(0, {}) == {5: 30.0}
    assert got.get(2, {}) == {} and got.get(42, ()) == () and got.get(5) is None
    assert NeighbourRows.of({}, *(np.zeros(0, dtype=np.int64),) * 3).get(0, {}) == {}
