"""Episode and multi-shot samplers, and the affine augmentation."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from warpgrad.data.base import InMemoryClassDataset, split_by_fraction
from warpgrad.tasks.augment import random_affine
from warpgrad.tasks.base import family_split
from warpgrad.tasks.classification import EpisodeFamily, MultiShotFamily


def toy_dataset(n_classes=30, per_class=20, groups_of=6):
    """Class c's images are constant c / n_classes, image i adds i / 1000: both recoverable."""
    images = [
        (torch.full((per_class, 1, 4, 4), c / n_classes) + torch.arange(per_class).view(-1, 1, 1, 1) / 1000)
        for c in range(n_classes)
    ]
    groups = [f"g{c // groups_of}" for c in range(n_classes)]
    splits = split_by_fraction(n_classes, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0, groups=groups)
    return InMemoryClassDataset("toy", images, [f"c{c}" for c in range(n_classes)], splits, groups)


def class_of(images, n_classes=30):
    return torch.round(images[:, 0, 0, 0] * n_classes - 0.49).long()  # undo the +i/1000 offset


DATA = toy_dataset()


@settings(max_examples=40, deadline=None)
@given(ways=st.integers(1, 6), shots=st.integers(1, 5), queries=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_episodes_have_n_by_k_support_n_by_q_query_and_consistent_labels(ways, shots, queries, seed):
    family = EpisodeFamily(DATA, ways, shots, queries)
    episode = family.sample(torch.Generator().manual_seed(seed))
    assert episode.support_x.shape == (ways * shots, 1, 4, 4) and episode.query_x.shape == (ways * queries, 1, 4, 4)
    assert sorted(set(episode.support_y.tolist())) == list(range(ways))
    assert torch.bincount(episode.query_y, minlength=ways).tolist() == [queries] * ways
    # every label names one class, the same in support and query, and all are distinct classes
    label_class = {}
    for x, y in ((episode.support_x, episode.support_y), (episode.query_x, episode.query_y)):
        for c, label in zip(class_of(x).tolist(), y.tolist()):
            assert label_class.setdefault(label, c) == c
    assert len(set(label_class.values())) == ways
    assert set(label_class.values()) <= set(DATA.splits["train"])
    # support and query images of a class are distinct drawings
    support = set(torch.round(episode.support_x[:, 0, 0, 0] * 1e6).tolist())
    query = set(torch.round(episode.query_x[:, 0, 0, 0] * 1e6).tolist())
    assert not support & query


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_same_seed_same_episode_and_splits_use_disjoint_classes(seed):
    family = EpisodeFamily(DATA, 3, 2, 2)
    a = family.sample(torch.Generator().manual_seed(seed))
    b = family.sample(torch.Generator().manual_seed(seed))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_y, b.query_y)
    seen = {
        split: set(family_split(family, split).sample(torch.Generator().manual_seed(seed)).classes)
        for split in ("train", "val", "test")
    }
    assert not seen["train"] & seen["val"] and not seen["train"] & seen["test"] and not seen["val"] & seen["test"]


def test_bad_episode_settings_name_the_value():
    with pytest.raises(ValueError, match="50-way.*has 18"):
        EpisodeFamily(DATA, 50, 1)
    with pytest.raises(ValueError, match="shots \\+ queries = 25"):
        EpisodeFamily(DATA, 5, 10, 15)
    with pytest.raises(ValueError, match="no split 'dev'"):
        EpisodeFamily(DATA, 5, 1).split("dev").sample(torch.Generator())


def test_multishot_tasks_take_one_groups_classes_with_train_and_test_drawings():
    family = MultiShotFamily(DATA, ways=5, train_per_class=15, test_per_class=5, batch_size=7, augment=False)
    task = family.sample(torch.Generator().manual_seed(1))
    assert len({DATA.groups[c] for c in task.classes}) == 1
    assert task.train_x.shape == (75, 1, 4, 4) and task.test_x.shape == (25, 1, 4, 4)
    x, y = task.train_batch(torch.Generator().manual_seed(0))
    assert x.shape[0] == 7 and torch.equal(class_of(x), torch.tensor(task.classes)[y])
    train_ids = set(torch.round(task.train_x[:, 0, 0, 0] * 1e6).tolist())
    assert not train_ids & set(torch.round(task.test_x[:, 0, 0, 0] * 1e6).tolist())


def test_multishot_drops_groups_with_too_few_classes():
    # groups of 6 classes: 7-way tasks are impossible, 6-way ones use every class of a group
    with pytest.raises(ValueError, match="no group"):
        MultiShotFamily(DATA, ways=7)
    assert all(len(v) == 6 for v in MultiShotFamily(DATA, ways=6, train_per_class=15).eligible_groups().values())


def test_random_affine_matches_a_hand_computed_rotation_and_shift():
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 6] = 1.0  # right of centre
    g = torch.Generator().manual_seed(0)
    rotated = random_affine(image, g, rotation=(90.0, 90.0), translate=0.0, scale=(1.0, 1.0))
    assert divmod(torch.argmax(rotated).item(), 9) == (6, 4)  # +90° turns clockwise as displayed: right → below
    assert rotated.sum().item() == pytest.approx(1.0, abs=1e-5)
    identity = random_affine(image, g, rotation=(0.0, 0.0), translate=0.0, scale=(1.0, 1.0))
    torch.testing.assert_close(identity, image)
    point = torch.zeros(1, 1, 11, 11)
    point[0, 0, 5, 6] = 1.0  # one pixel right of centre
    zoomed = random_affine(point, g, rotation=(0.0, 0.0), translate=0.0, scale=(2.0, 2.0))
    assert divmod(torch.argmax(zoomed).item(), 11) == (5, 7)  # scale 2 doubles the distance from the centre
    shifted = random_affine(torch.ones(1, 1, 10, 10), g, rotation=(0.0, 0.0), translate=0.2, scale=(1.0, 1.0))
    assert 0 < shifted.sum().item() < 100  # part of the image moved out of frame
    assert math.isclose(
        float(random_affine(image, torch.Generator().manual_seed(3)).sum()),
        float(random_affine(image, torch.Generator().manual_seed(3)).sum()),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(20, 1, 28, 28), (1, 1, 28, 28), (3, 2, 17, 9), (2, 1, 1, 5)])
def test_random_affine_samples_the_grid_affine_grid_builds(dtype, shape):
    """The grid is formed elementwise, not by ``F.affine_grid`` (a batched matrix product that
    costs most of the augmentation on small images). The pixels are the same to the bit where that
    product rounds each multiply and add, as on AVX2 CPUs; where it fuses them (AVX-512), grid
    coordinates differ in their last bits and pixels by up to ~30 ulps of 1 (the image's slope
    times the coordinate's difference)."""
    images = torch.rand(*shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)  # random_affine's draws, in its order
        n = shape[0]
        angle = torch.deg2rad(0.0 + (360.0 - 0.0) * torch.rand(n, generator=g, dtype=dtype))
        zoom = 0.8 + (1.2 - 0.8) * torch.rand(n, generator=g, dtype=dtype)
        shift = (2 * torch.rand(n, 2, generator=g, dtype=dtype) - 1) * 0.2 * 2
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        rows = [
            [cos, sin, -(cos * shift[:, 0] + sin * shift[:, 1])],
            [-sin, cos, -(-sin * shift[:, 0] + cos * shift[:, 1])],
        ]
        theta = torch.stack([torch.stack(row, 1) for row in rows], 1)
        grid = torch.nn.functional.affine_grid(theta, list(shape), align_corners=False)
        expected = torch.nn.functional.grid_sample(images, grid, align_corners=False)
        got = random_affine(images, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(got, expected, rtol=0, atol=64 * torch.finfo(dtype).eps)
