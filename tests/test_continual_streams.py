"""Continual-learning streams: permuted, rotated, split, class sequence, continual sine."""

import math

import pytest
import torch

from warpgrad.data.base import InMemoryClassDataset
from warpgrad.tasks.continual import (
    ContinualSineFamily,
    class_sequence_stream,
    permuted_stream,
    rotate,
    rotated_stream,
    split_stream,
)


def _arrays(n, n_classes=10, shape=(1, 6, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g)
    y = torch.arange(n) % n_classes
    return x, y


TRAIN, TEST = _arrays(40, seed=0), _arrays(20, seed=1)


# --------------------------------------------------------------------------- permuted


def test_permuted_stream():
    stream = permuted_stream(TRAIN, TEST, n_experiences=3, seed=5)
    assert stream.scenario == "domain-incremental" and len(stream) == 3 and stream.n_classes == 10
    first = stream[0]
    assert torch.equal(first.train_x, TRAIN[0]) and torch.equal(first.test_x, TEST[0])
    flat = TRAIN[0].flatten(1)
    perms = []
    for e in stream.experiences[1:]:
        assert torch.equal(e.train_y, TRAIN[1]) and torch.equal(e.test_y, TEST[1])
        out = e.train_x.flatten(1)
        assert not torch.equal(out, flat)
        # each image's pixels are a permutation of the original's
        assert torch.equal(out.sort(1).values, flat.sort(1).values)
        # recover the permutation from the (distinct-valued) first image; same for every train and test image
        perm = torch.tensor([int((flat[0] == v).nonzero()) for v in out[0]])
        assert torch.equal(out, flat[:, perm])
        assert torch.equal(e.test_x.flatten(1), TEST[0].flatten(1)[:, perm])
        perms.append(perm)
    assert not torch.equal(perms[0], perms[1])
    again = permuted_stream(TRAIN, TEST, n_experiences=3, seed=5)
    other = permuted_stream(TRAIN, TEST, n_experiences=3, seed=6)
    assert all(torch.equal(a.train_x, b.train_x) for a, b in zip(stream, again))
    assert not torch.equal(stream[1].train_x, other[1].train_x)


def test_permuted_multichannel_moves_whole_pixels():
    x = torch.rand(2, 3, 4, 4)
    x[:, 1] = x[:, 0] * 2  # channels stay tied together at each pixel
    stream = permuted_stream((x, torch.tensor([0, 1])), (x, torch.tensor([0, 1])), 2, seed=0)
    assert torch.equal(stream[1].train_x[:, 1], stream[1].train_x[:, 0] * 2)


def test_permuted_validation():
    with pytest.raises(ValueError, match="n_experiences"):
        permuted_stream(TRAIN, TEST, 0)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        permuted_stream((TRAIN[0][:, 0], TRAIN[1]), TEST, 2)


# --------------------------------------------------------------------------- rotated


def test_rotated_stream_exact_multiples_of_90():
    stream = rotated_stream(TRAIN, TEST, [0, 90, 180, -90])
    assert stream.scenario == "domain-incremental" and len(stream) == 4
    assert torch.equal(stream[0].train_x, TRAIN[0])
    assert torch.equal(stream[1].train_x, torch.rot90(TRAIN[0], 1, dims=(2, 3)))
    assert torch.equal(stream[1].test_x, torch.rot90(TEST[0], 1, dims=(2, 3)))
    assert torch.equal(stream[2].train_x, torch.rot90(TRAIN[0], 2, dims=(2, 3)))
    assert torch.equal(stream[3].train_x, torch.rot90(TRAIN[0], 3, dims=(2, 3)))
    assert all(torch.equal(e.train_y, TRAIN[1]) for e in stream)


def test_bilinear_rotation_agrees_with_rot90():
    from warpgrad.tasks.continual import _rotate_bilinear

    x = TRAIN[0][:4]
    # a 90° turn maps pixel centres onto pixel centres: bilinear must reproduce rot90 in the same direction
    assert torch.allclose(_rotate_bilinear(x, 90.0), torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)
    wide = torch.rand(1, 1, 4, 6)
    # non-square: 180° keeps the shape and is exact
    assert torch.allclose(_rotate_bilinear(wide, 180.0), torch.rot90(wide, 2, dims=(2, 3)), atol=1e-5)
    # an arbitrary angle keeps the centre pixel of an odd-sized image, and rotating back mostly restores the image
    odd = torch.zeros(1, 1, 9, 9)
    odd[0, 0, 4, 4] = 1.0
    assert rotate(odd, 33.0)[0, 0, 4, 4] == pytest.approx(1.0, abs=1e-5)
    assert not torch.equal(rotate(TRAIN[0], 45.0), TRAIN[0])


# --------------------------------------------------------------------------- split


@pytest.mark.parametrize("seed", [None, 3])
def test_split_stream_class_incremental(seed):
    stream = split_stream(TRAIN, TEST, classes_per_experience=2, scenario="class-incremental", seed=seed)
    assert stream.scenario == "class-incremental" and len(stream) == 5 and stream.n_classes == 10
    seen = []
    for t, e in enumerate(stream):
        assert e.index == t and len(e.classes) == 2 and e.task_id == 0
        assert set(e.train_y.tolist()) == set(e.classes) == set(e.test_y.tolist())
        assert len(e.train_y) == 8 and len(e.test_y) == 4  # 4 train / 2 test images per class
        seen += e.classes
    assert sorted(seen) == list(range(10))  # disjoint and complete
    if seed is None:
        assert [e.classes for e in stream] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    else:
        assert [e.classes for e in stream] != [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
        again = split_stream(TRAIN, TEST, 2, "class-incremental", seed=seed)
        assert [e.classes for e in again] == [e.classes for e in stream]


def test_split_stream_task_incremental():
    stream = split_stream(TRAIN, TEST, classes_per_experience=5, scenario="task-incremental", seed=1)
    assert len(stream) == 2 and stream.n_classes == 5
    for t, e in enumerate(stream):
        assert e.task_id == t
        assert set(e.train_y.tolist()) == set(range(5)) == set(e.test_y.tolist())
        # label k is class e.classes[k]: the images are those of that original class
        for k, c in enumerate(e.classes):
            assert torch.equal(e.train_x[e.train_y == k], TRAIN[0][TRAIN[1] == c])
            assert torch.equal(e.test_x[e.test_y == k], TEST[0][TEST[1] == c])
    assert set(stream[0].classes).isdisjoint(stream[1].classes)


def test_split_stream_validation():
    with pytest.raises(ValueError, match=r"classes_per_experience=3 does not divide the 10 classes.*\[1, 2, 5, 10\]"):
        split_stream(TRAIN, TEST, 3, "class-incremental")
    with pytest.raises(ValueError, match=r"'task-incremental' or 'class-incremental', got 'domain-incremental'"):
        split_stream(TRAIN, TEST, 2, "domain-incremental")
    with pytest.raises(ValueError, match="test labels"):
        split_stream(TRAIN, (TEST[0], TEST[1] + 5), 2, "class-incremental")


# --------------------------------------------------------------------------- class sequence


def _dataset(n_classes=6, per_class=12):
    # pixel value encodes (class, image) so images are all distinct and traceable
    images = [
        (c * per_class + torch.arange(per_class, dtype=torch.float32)).view(-1, 1, 1, 1).expand(-1, 1, 3, 3) / 1000
        for c in range(n_classes)
    ]
    classes = [str(c) for c in range(n_classes)]
    return InMemoryClassDataset("toy", images, classes, {"train": [0, 1], "test": [2, 3, 4, 5]})


def test_class_sequence_stream():
    ds = _dataset()
    stream = class_sequence_stream(ds, "test", n_classes=3, train_per_class=5, test_per_class=4, seed=0)
    assert stream.scenario == "class-incremental" and len(stream) == 3 and stream.n_classes == 3
    used = []
    for label, e in enumerate(stream):
        assert len(e.classes) == 1 and e.classes[0] in ds.splits["test"]
        assert e.train_y.tolist() == [label] * 5 and e.test_y.tolist() == [label] * 4
        ids = lambda x: set((x[:, 0, 0, 0] * 1000).round().long().tolist())  # noqa: E731
        tr, te = ids(e.train_x), ids(e.test_x)
        assert len(tr) == 5 and len(te) == 4 and tr.isdisjoint(te)
        c = e.classes[0]
        assert all(c * 12 <= i < (c + 1) * 12 for i in tr | te)  # images come from that class
        used.append(c)
    assert len(set(used)) == 3
    again = class_sequence_stream(ds, "test", 3, 5, 4, seed=0)
    assert [e.classes[0] for e in again] == used
    orders = {tuple(e.classes[0] for e in class_sequence_stream(ds, "test", 4, 5, 4, seed=s)) for s in range(6)}
    assert len(orders) > 1  # the order depends on the seed


def test_class_sequence_validation():
    ds = _dataset()
    with pytest.raises(ValueError, match="only 2 classes"):
        class_sequence_stream(ds, "train", 3, 5, 4)
    with pytest.raises(ValueError, match="fewer than"):
        class_sequence_stream(ds, "test", 2, 10, 4)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        class_sequence_stream(ds, "val", 2, 5, 4)


# --------------------------------------------------------------------------- continual sine


def test_continual_sine():
    family = ContinualSineFamily(n_intervals=5, points_per_interval=7, test_points_per_interval=11)
    stream = family.sample(torch.Generator().manual_seed(0))
    assert stream.scenario == "domain-incremental" and len(stream) == 5 and stream.n_classes == 0
    assert 0.1 <= stream.amplitude <= 5 and 0 <= stream.phase <= math.pi
    edges = torch.linspace(-5, 5, 6)
    for i, e in enumerate(stream):
        assert e.classes == [] and e.train_x.shape == (7, 1) and e.test_x.shape == (11, 1)
        for x, y in ((e.train_x, e.train_y), (e.test_x, e.test_y)):
            assert bool(((x >= edges[i] - 1e-6) & (x <= edges[i + 1] + 1e-6)).all())
            expected = stream.amplitude * torch.sin(x.double() - stream.phase)
            assert torch.allclose(y.double(), expected, atol=1e-5)
    again = family.sample(torch.Generator().manual_seed(0))
    assert again.amplitude == stream.amplitude and all(torch.equal(a.train_x, b.train_x) for a, b in zip(stream, again))
    other = family.sample(torch.Generator().manual_seed(1))
    assert other.amplitude != stream.amplitude


def test_continual_sine_validation():
    with pytest.raises(ValueError, match="n_intervals"):
        ContinualSineFamily(n_intervals=0)
    with pytest.raises(ValueError, match="x_range"):
        ContinualSineFamily(x_range=(1.0, 1.0))
