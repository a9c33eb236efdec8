"""KanjiVG: SVG path parser, torch rasteriser, and the ClassDataset over rendered characters."""

import importlib.metadata
import shutil

import pytest
import torch

from warpgrad.data import kanjivg as kv
from warpgrad.data.base import ClassDataset
from warpgrad.data.kanjivg import (
    Jitter,
    KanjiDataset,
    kanji_status,
    kanjivg_dir,
    load_strokes,
    parse_path,
    render,
    render_batch,
    sample_chain,
)


@pytest.fixture(autouse=True)
def no_render_cache(monkeypatch):
    """Datasets here render (tests/test_kanjivg_cache.py tests the disk cache) and write nothing."""
    monkeypatch.setenv("WARPGRAD_NO_RENDER_CACHE", "1")


def _pts(chain):
    return [[round(v, 4) for v in p] for p in chain.tolist()]


def _anchors(chain):
    return _pts(chain[::3])


# --------------------------------------------------------------------------------------------
# Path parser


def test_absolute_line_is_an_exact_cubic():
    (chain,) = parse_path("M10,20 L40,50")
    assert _pts(chain) == [[10, 20], [20, 30], [30, 40], [40, 50]]


def test_relative_lines_h_v_and_close():
    (chain,) = parse_path("m10,20 l5,0 h5 v-10 z")
    assert _anchors(chain) == [[10, 20], [15, 20], [20, 20], [20, 10], [10, 20]]
    (chain,) = parse_path("M10,20 H30 V0 H10")
    assert _anchors(chain) == [[10, 20], [30, 20], [30, 0], [10, 0]]


def test_implicit_repetition():
    # extra pairs after M are absolute lines, after m relative lines
    assert _anchors(parse_path("M0,0 10,0 10,10")[0]) == [[0, 0], [10, 0], [10, 10]]
    assert _anchors(parse_path("m1,1 2,0 0,2")[0]) == [[1, 1], [3, 1], [3, 3]]
    (chain,) = parse_path("M0,0C1,1 2,1 3,0 4,-1 5,-1 6,0")
    assert _pts(chain) == [[0, 0], [1, 1], [2, 1], [3, 0], [4, -1], [5, -1], [6, 0]]
    (chain,) = parse_path("M0,0c1,1,2,1,3,0,1,-1,2,-1,3,0")  # relative to each segment's start
    assert _pts(chain) == [[0, 0], [1, 1], [2, 1], [3, 0], [4, -1], [5, -1], [6, 0]]


def test_smooth_curve_reflects_the_previous_control_point():
    (chain,) = parse_path("M10,10c0,5,10,5,10,0s10,-5,10,0")
    # c: controls (10,15), (20,15), end (20,10); s: first control = 2·(20,10) − (20,15) = (20,5)
    assert _pts(chain) == [[10, 10], [10, 15], [20, 15], [20, 10], [20, 5], [30, 5], [30, 10]]
    (chain,) = parse_path("M10,10C10,15 20,15 20,10S30,5 30,10")
    assert _pts(chain)[4] == [20, 5]
    # without a preceding C/S the first control point is the current point
    assert _pts(parse_path("M0,0 S5,5 10,0")[0]) == [[0, 0], [0, 0], [5, 5], [10, 0]]
    assert _pts(parse_path("M0,0 L2,0 S5,5 10,0")[0])[4] == [2, 0]


def test_quadratics_become_cubics():
    (chain,) = parse_path("M0,0Q3,3 6,0T12,0")
    # Q: (0,0)+⅔((3,3)−(0,0)) = (2,2); (6,0)+⅔((3,3)−(6,0)) = (4,2); T reflects (3,3) to (9,−3)
    assert _pts(chain) == [[0, 0], [2, 2], [4, 2], [6, 0], [8, -2], [10, -2], [12, 0]]


def test_number_formats():
    assert _anchors(parse_path("M-1.5-2.3l.5.5")[0]) == [[-1.5, -2.3], [-1.0, -1.8]]
    assert _anchors(parse_path("M1e1,2E-1 L 1.5e+1 , -2")[0]) == [[10, 0.2], [15, -2]]
    assert _anchors(parse_path("M1.5.5L.25-.75")[0]) == [[1.5, 0.5], [0.25, -0.75]]
    assert _anchors(parse_path("M 1. 2 L +3 4")[0]) == [[1, 2], [3, 4]]


def test_subpaths():
    chains = parse_path("M0,0L1,0M5,5l1,0")
    assert [_anchors(c) for c in chains] == [[[0, 0], [1, 0]], [[5, 5], [6, 5]]]
    # drawing after Z starts a new subpath at the closed one's start
    chains = parse_path("M0,0L1,0L1,1Z L2,2")
    assert [_anchors(c) for c in chains] == [[[0, 0], [1, 0], [1, 1], [0, 0]], [[0, 0], [2, 2]]]


@pytest.mark.parametrize(
    "d, match",
    [
        ("M0,0 A1,1 0 0 1 5,5", "command 'A'"),
        ("M0,0 x1", "command 'x'"),
        ("10,10", "must start with M"),
        ("L1,1", "must start with M"),
        ("M0,0 L1", "needs 2 numbers"),
        ("M0,0 L1,#", "unexpected character"),
        ("M0,0 L1,-", "bad number"),
        ("", "empty"),
    ],
)
def test_bad_path_data_names_the_source(d, match):
    with pytest.raises(ValueError, match=match) as info:
        parse_path(d, source="k.svg")
    assert "k.svg" in str(info.value)


def test_sample_chain():
    (line,) = parse_path("M0,0 L3,0")
    assert _pts(sample_chain(line, 3)) == [[0, 0], [1, 0], [2, 0], [3, 0]]
    (curve,) = parse_path("M0,0 C0,8 8,8 8,0 L8,-4")
    poly = sample_chain(curve, 2)
    # B(½) = (P0 + 3·C1 + 3·C2 + P3)/8 = (4, 6); then the line's midpoint and end
    assert _pts(poly) == [[0, 0], [4, 6], [8, 0], [8, -2], [8, -4]]


def test_real_file_first_stroke():
    (stroke,) = load_strokes("一")  # M11,54.25c3.19,0.62,6.25,0.75,9.73,0.5c20.64-1.5,... three segments
    assert _pts(stroke)[:4] == [[11, 54.25], [14.19, 54.87], [17.25, 55.0], [20.73, 54.75]]
    assert _anchors(stroke) == [[11, 54.25], [20.73, 54.75], [89.31, 49.51], [96.88, 50.0]]


def test_a_sample_of_real_files_parses():
    files = list(kv._files(kanjivg_dir()).values())
    sample = files[::25]
    assert len(sample) >= 200
    for path in sample:
        strokes = load_strokes(path)
        _, n_strokes = kv._scan(path)  # the cheap regex scan agrees with the XML parse
        assert len(strokes) == n_strokes, path
        points = torch.cat(strokes)
        assert points.min() > -5 and points.max() < 115, path


def test_unknown_command_in_a_file_names_the_file(tmp_path):
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg"><g id="kvg:StrokePaths_0e000">'
        '<path d="M10,10 A5,5 0 0 1 20,20"/></g></svg>'
    )
    (tmp_path / "0e000.svg").write_text(svg)
    with pytest.raises(ValueError, match=r"0e000\.svg.*'A'"):
        load_strokes("\ue000", root=tmp_path)


# --------------------------------------------------------------------------------------------
# Rasteriser


def test_horizontal_line_inks_only_its_rows():
    # size 109 with no margin: one pixel per viewBox unit, pixel centres at k + ½
    (line,) = parse_path("M20.5,50.5 H80.5")
    image = render([line], size=109, thickness=3.0, margin=0.0)[0]
    assert (image[49:52, 20:81] == 1).all()  # within the half width 1.5 of the line
    assert image[:48].sum() == 0 and image[53:].sum() == 0
    assert image[48].sum() == 0 and image[52].sum() == 0  # distance 2 = half width + ½: no coverage
    assert image[:, :18].sum() == 0 and image[:, 83:].sum() == 0  # round caps end 1.5 past the ends
    # anti-aliasing: coverage = half width + ½ − distance
    (line,) = parse_path("M20.5,50.75 H80.5")
    image = render([line], size=109, thickness=3.0, margin=0.0)[0]
    assert image[52, 50].item() == pytest.approx(0.25, abs=1e-5)  # distance 1.75
    assert image[49, 50].item() == pytest.approx(0.75, abs=1e-5)  # distance 1.25
    assert image[51, 50].item() == 1.0


def test_the_box_is_fitted_to_any_size():
    (line,) = parse_path("M30,40 H80")
    for size in (28, 84):
        image = render([line], size=size)[0]
        assert image.shape == (size, size)
        scale = size / (kv.VIEWBOX + 2 * kv.MARGIN)  # pixels per unit: the box ± margin fills the image
        y, reach = (40 + kv.MARGIN) * scale, kv.THICKNESS * scale / 2 + 0.5
        inked = image.sum(1).nonzero()[:, 0] + 0.5  # row centres with ink
        assert inked.numel() >= 2 and ((inked - y).abs() < reach).all()
        assert int(image.sum(1).argmax()) == int(y)  # the row the line passes through
        cols = image.sum(0).nonzero()[:, 0] + 0.5
        assert cols.min() == pytest.approx((30 + kv.MARGIN) * scale - reach, abs=1)
        assert cols.max() == pytest.approx((80 + kv.MARGIN) * scale + reach, abs=1)


@pytest.mark.parametrize("size", [28, 84])
def test_render_shape_range_and_seeds(size):
    strokes = load_strokes("漢")
    a = render(strokes, size, torch.Generator().manual_seed(1))
    b = render(strokes, size, torch.Generator().manual_seed(1))
    c = render(strokes, size, torch.Generator().manual_seed(2))
    assert a.shape == (1, size, size) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1 and (a == 1).any() and (a == 0).any()
    assert ((a > 0) & (a < 1)).any()  # anti-aliased edges
    assert torch.equal(a, b)
    assert (a - c).abs().sum() > 10  # a different drawing


def test_no_jitter_is_deterministic_without_a_generator():
    strokes = load_strokes("永")
    plain = render(strokes)
    assert torch.equal(plain, render(strokes))
    assert torch.equal(plain, render(strokes, generator=torch.Generator().manual_seed(3), jitter=None))
    assert not torch.equal(plain, render(strokes, generator=torch.Generator().manual_seed(3)))
    zero = Jitter(*[0.0] * 12)
    assert torch.equal(plain, render(strokes, generator=torch.Generator().manual_seed(3), jitter=zero))


def test_batched_and_chunked_rendering_are_bit_identical(monkeypatch):
    strokes = load_strokes("鬱")
    seeds = [0, 1, 2, 3, 4]
    for size in (28, 84):
        single = torch.stack([render(strokes, size, torch.Generator().manual_seed(s)) for s in seeds])
        batch = render_batch(strokes, [torch.Generator().manual_seed(s) for s in seeds], size)
        assert torch.equal(single, batch)
        for pairs in (1, 1 << 30):  # one drawing per step, all drawings in one step: the same pixels
            monkeypatch.setattr(kv.raster, "_CHUNK_ELEMENTS", pairs)
            chunked = render_batch(strokes, [torch.Generator().manual_seed(s) for s in seeds], size)
            monkeypatch.undo()
            assert torch.equal(chunked, batch)


def _dense_rasterise(vx, vy, seg_a, seg_b, half_width, size):
    """The rasteriser as it was before it computed only the (pixel, segment) pairs within reach:
    every pixel against every segment, the same arithmetic, the minimum over all segments."""
    ax, ay = vx[:, seg_a], vy[:, seg_a]
    abx, aby = vx[:, seg_b] - ax, vy[:, seg_b] - ay
    inv = 1 / (abx * abx + aby * aby).clamp_min(1e-12)
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    apx = centres[None, :, None] - ax[:, None, :]  # [B, W, S]
    apy = centres[None, :, None] - ay[:, None, :]  # [B, H, S]
    t = (apx * abx[:, None, :])[:, None] + (apy * aby[:, None, :])[:, :, None]  # [B, H, W, S]
    t = t.mul_(inv[:, None, None, :]).clamp_(0, 1)
    dx = apx[:, None] - t * abx[:, None, None, :]
    dy = apy[:, :, None] - t.mul_(aby[:, None, None, :])
    d2 = dx.mul_(dx).add_(dy.mul_(dy)).amin(-1)
    return (half_width[:, None, None] + 0.5 - d2.sqrt_()).clamp_(0, 1)[:, None]


def test_the_rasteriser_equals_the_dense_one_bit_for_bit(monkeypatch):
    compared = []

    def both(*args):
        fast = rasterise(*args)
        assert torch.equal(fast, _dense_rasterise(*args))
        compared.append(fast.shape[0])
        return fast

    rasterise = kv.raster._rasterise
    monkeypatch.setattr(kv.raster, "_rasterise", both)
    chars = list(kv._files(kanjivg_dir()))
    sample = [chars[i] for i in torch.randperm(len(chars), generator=torch.Generator().manual_seed(0))[:12]]
    for size in (9, 28, 61):
        for ch in [*sample, "鬱", "・"]:
            strokes = load_strokes(ch)
            render_batch(strokes, [torch.Generator().manual_seed(s) for s in range(3)], size)
            render(strokes, size)
    # polylines partly or wholly outside the image, zero-length segments, thick and thin pens
    g = torch.Generator().manual_seed(1)
    vx, vy = torch.rand(4, 30, generator=g) * 40 - 10, torch.rand(4, 30, generator=g) * 40 - 10
    vx[:, 5], vy[:, 5] = vx[:, 4], vy[:, 4]
    seg_a = torch.arange(29)
    both(vx, vy, seg_a, seg_a + 1, torch.tensor([0.1, 0.7, 2.5, 6.0]), 20)
    assert len(compared) == 3 * 2 * 14 + 1


def test_jitter_keeps_characters_recognisable():
    # nearest canonical rendering (pixel distance) identifies most jittered drawings among 40 characters
    ds = KanjiDataset(n_classes=40, drawings=5, seed=5)
    templates = torch.stack([render(load_strokes(ch)) for ch in ds.classes]).flatten(1)
    drawings = torch.stack([ds.images(c) for c in range(40)]).flatten(2)  # [40, 5, 784]
    nearest = torch.cdist(drawings.flatten(0, 1), templates).argmin(1).reshape(40, 5)
    accuracy = (nearest == torch.arange(40)[:, None]).float().mean().item()
    assert accuracy >= 0.8
    # and the drawings of a class do differ from each other
    assert all((drawings[c, 0] - drawings[c, 1]).abs().sum() > 5 for c in range(40))


def test_bad_render_arguments():
    strokes = load_strokes("一")
    with pytest.raises(ValueError, match="size"):
        render(strokes, size=0)
    with pytest.raises(ValueError, match="no strokes"):
        render([])
    with pytest.raises(ValueError, match="3n\\+1"):
        render([torch.zeros(3, 2)])


# --------------------------------------------------------------------------------------------
# Dataset


def test_dataset_protocol_splits_and_groups():
    ds = KanjiDataset(n_classes=120, drawings=4, seed=0)
    assert isinstance(ds, ClassDataset)
    assert ds.name == "kanjivg" and ds.image_shape == (1, 28, 28)
    assert len(ds.classes) == len(set(ds.classes)) == len(ds.groups) == 120
    assert ds.count(0) == 4
    assert set(ds.splits) == {"train", "val", "test"}
    members = [set(v) for v in ds.splits.values()]
    assert sum(map(len, members)) == 120 and set().union(*members) == set(range(120))
    for a in ds.splits:
        for b in ds.splits:
            if a != b:
                assert not members[list(ds.splits).index(a)] & members[list(ds.splits).index(b)]
    group_split = {}
    for split, classes in ds.splits.items():
        for c in classes:
            assert group_split.setdefault(ds.groups[c], split) == split  # whole groups per split
    x = ds.images(5)
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_groups_by_radical_and_by_strokes():
    chars = ["漢", "海", "品", "味", "あ", "木", "林"]
    ds = KanjiDataset(characters=chars, splits={"train": 1.0})
    assert ds.classes == chars
    assert ds.groups == ["氵", "氵", "口", "口", "3 strokes", "木", "木"]
    ds = KanjiDataset(characters=chars, group_by="strokes", splits={"train": 1.0})
    assert ds.groups == ["13 strokes", "9 strokes", "9 strokes", "8 strokes", "3 strokes", "4 strokes", "8 strokes"]
    ds = KanjiDataset(characters=chars, min_group_size=2, splits={"train": 1.0})
    assert ds.classes == ["漢", "海", "品", "味", "木", "林"]


def test_images_are_stable_across_calls_orders_and_subsets():
    a = KanjiDataset(n_classes=30, drawings=6, seed=2)
    c = 7
    one = a.images(c, [4])  # rendered alone, first
    assert torch.equal(one[0], a.images(c)[4])
    assert torch.equal(a.images(c, [4]), one)
    b = KanjiDataset(n_classes=30, drawings=6, seed=2)
    full = b.images(c)  # all drawings at once, in a fresh dataset
    assert torch.equal(full, a.images(c))
    assert torch.equal(b.images(c, torch.tensor([5, 1, 1])), full[[5, 1, 1]])
    # the same character in another subset (another class index) has the same drawings
    other = KanjiDataset(characters=[a.classes[c], "一"], drawings=6, seed=2, splits={"train": 1.0})
    assert torch.equal(other.images(0), full)
    # another seed: other drawings of the same character
    third = KanjiDataset(characters=[a.classes[c]], drawings=6, seed=3, splits={"train": 1.0})
    assert not torch.equal(third.images(0), full)
    assert not torch.equal(full[0], full[1])


def test_subsets_are_seeded_and_keep_min_group_size():
    a = KanjiDataset(n_classes=50, seed=0)
    assert a.classes == KanjiDataset(n_classes=50, seed=0).classes
    assert a.classes != KanjiDataset(n_classes=50, seed=1).classes
    assert [ord(ch) for ch in a.classes] == sorted(ord(ch) for ch in a.classes)
    ds = KanjiDataset(n_classes=200, min_group_size=10, seed=0)
    assert len(ds.classes) == 200
    sizes = {g: ds.groups.count(g) for g in ds.groups}
    assert min(sizes.values()) >= 10
    with pytest.raises(ValueError, match="n_classes=50 but only"):
        KanjiDataset(n_classes=50, characters=["一", "二"])


def test_only_the_chosen_files_are_read(tmp_path):
    source = kanjivg_dir()
    for path in list(kv._files(source).values())[1000:1300]:
        shutil.copy(path, tmp_path / path.name)
    ds = KanjiDataset(n_classes=20, drawings=2, root=tmp_path, splits={"train": 0.5, "test": 0.5})
    scanned = [p for p in kv._SCANS if p.parent == tmp_path]
    assert len(scanned) == 20 and {p.name for p in scanned} == {f"{ord(ch):05x}.svg" for ch in ds.classes}
    assert kanji_status(tmp_path) == "present (300 characters)"


def test_bad_dataset_arguments():
    with pytest.raises(ValueError, match="not in KanjiVG"):
        KanjiDataset(characters=["一", "☃"])
    with pytest.raises(ValueError, match="group_by"):
        KanjiDataset(n_classes=10, group_by="alphabet")
    with pytest.raises(ValueError, match="drawings"):
        KanjiDataset(n_classes=10, drawings=0)
    with pytest.raises(ValueError, match="image_size must be at most 2048, got 4096"):
        KanjiDataset(n_classes=10, image_size=4096)
    with pytest.raises(ValueError, match="got no classes"):
        KanjiDataset(characters=["一", "二"])  # 2 groups cannot fill 3 splits
    ds = KanjiDataset(n_classes=10, drawings=3)
    with pytest.raises(ValueError, match="drawing index"):
        ds.images(0, [3])
    with pytest.raises(ValueError, match="class index"):
        ds.images(10)


def test_missing_package_gives_the_install_hint(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ValueError, match="pip install kanjivg"):
        KanjiDataset(n_classes=10)
    assert kanji_status() == "missing package: pip install kanjivg"
