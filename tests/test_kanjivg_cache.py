"""The disk cache of rendered KanjiVG drawings (warpgrad.data.kanjivg.render_cache) and KanjiDataset's use of it."""

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from warpgrad.data import kanjivg as kv
from warpgrad.data.kanjivg import Jitter, KanjiDataset, render_cache
from warpgrad.data.kanjivg import dataset as kanji_dataset

CHARS = ["漢", "海", "品", "永", "あ"]


@pytest.fixture(autouse=True)
def data_root(tmp_path, monkeypatch):
    """Caches go to a temporary data root, and are on whatever the environment says."""
    monkeypatch.setenv("WARPGRAD_DATA", str(tmp_path / "data"))
    monkeypatch.delenv(render_cache.OFF_VARIABLE, raising=False)
    return tmp_path / "data"


def _dataset(**kwargs):
    return KanjiDataset(**{"characters": CHARS, "drawings": 4, "splits": {"train": 1.0}, **kwargs})


def _everything(ds):
    return torch.stack([ds.images(c) for c in range(len(ds.classes))])


def _class_files(root):
    return sorted(p for p in Path(root).rglob("*.pt"))


def _count_renders(monkeypatch):
    calls = []
    real = KanjiDataset._render

    def counting(self, c, drawings):
        calls.append((self.classes[c], list(drawings)))
        return real(self, c, drawings)

    monkeypatch.setattr(KanjiDataset, "_render", counting)
    return calls


def _forbid_rendering(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("rendered although the drawings are on disk")

    monkeypatch.setattr(KanjiDataset, "_render", fail)
    monkeypatch.setattr(kanji_dataset, "_draw", fail)


def test_a_new_dataset_reads_the_drawings_from_disk_without_rendering(data_root, monkeypatch):
    first = _everything(_dataset())
    files = _class_files(data_root)
    assert len(files) == len(CHARS)  # one file per class, in data_root()/kanjivg/renders/<key>/
    assert {f.parent.parent for f in files} == {data_root / "kanjivg" / "renders"}
    assert {f.name for f in files} == {f"{ord(ch):05x}.pt" for ch in CHARS}
    assert (files[0].parent / "key.json").is_file()
    rendered = _everything(_dataset(disk_cache=False))
    assert torch.equal(first, rendered)
    _forbid_rendering(monkeypatch)
    second = _dataset()  # a new process would be the same: an empty memory cache
    assert torch.equal(_everything(second), rendered)
    assert torch.equal(second.images(2, [3, 0, 3]), rendered[2, [3, 0, 3]])
    fewer = _dataset(drawings=2)  # the number of drawings is not in the key: drawing j is the same
    assert torch.equal(_everything(fewer), rendered[:, :2])


def test_a_first_access_renders_and_writes_the_whole_class(data_root, monkeypatch):
    calls = _count_renders(monkeypatch)
    ds = _dataset(drawings=6)
    ds.images(1, [2])
    assert calls == [(CHARS[1], [0, 1, 2, 3, 4, 5])]
    ds.images(1)
    assert len(calls) == 1
    (file,) = _class_files(data_root)
    images, done = ds._disk.load(ord(CHARS[1]), ds._svg_digest(1), ds.image_shape)
    assert done.all() and torch.equal(images.float() / 255, _dataset(drawings=6, disk_cache=False).images(1))


def test_more_drawings_than_on_disk_renders_only_the_rest(data_root, monkeypatch):
    _everything(_dataset(drawings=3))
    calls = _count_renders(monkeypatch)
    more = _dataset(drawings=5)
    images = _everything(more)
    assert calls == [(ch, [3, 4]) for ch in CHARS]
    assert torch.equal(images, _everything(_dataset(drawings=5, disk_cache=False)))
    calls.clear()
    assert torch.equal(_everything(_dataset(drawings=5)), images) and calls == []


@pytest.mark.parametrize(
    "change",
    [{"seed": 1}, {"image_size": 20}, {"jitter": Jitter(rotation=9.0)}, {"jitter": None}, "renderer", "torch"],
)
def test_a_changed_key_does_not_reuse_the_files(data_root, monkeypatch, change):
    before = _everything(_dataset())
    (old_dir,) = {f.parent for f in _class_files(data_root)}
    if change == "renderer":
        monkeypatch.setattr(render_cache, "RENDER_VERSION", render_cache.RENDER_VERSION + 1)
    elif change == "torch":
        monkeypatch.setattr(torch, "__version__", torch.__version__ + ".other")
    kwargs = change if isinstance(change, dict) else {}
    calls = _count_renders(monkeypatch)
    after = _everything(_dataset(**kwargs))
    assert len(calls) == len(CHARS)
    assert len({f.parent for f in _class_files(data_root)} - {old_dir}) == 1  # a new key directory
    if kwargs:
        assert after.shape != before.shape or not torch.equal(after, before)


def test_a_changed_svg_file_does_not_reuse_its_file(tmp_path, monkeypatch):
    source = kv.kanjivg_dir()
    svgs = tmp_path / "svgs"
    svgs.mkdir()
    for ch in CHARS:
        shutil.copy(source / f"{ord(ch):05x}.svg", svgs / f"{ord(ch):05x}.svg")
    _everything(_dataset(root=svgs))
    edited = svgs / f"{ord(CHARS[0]):05x}.svg"
    edited.write_text(edited.read_text(encoding="utf-8").replace('d="M', 'd="M 1,1 M', 1), encoding="utf-8")
    calls = _count_renders(monkeypatch)
    _everything(_dataset(root=svgs))
    assert [ch for ch, _ in calls] == [CHARS[0]]


def _corrupt(kind, path, other_key_file):
    if kind == "garbage":
        path.write_bytes(b"not a torch file")
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "pixels":  # a flipped pixel: the digest no longer matches
        obj = torch.load(path, weights_only=True)
        obj["images"][0, 0, 10, 10] ^= 1
        torch.save(obj, path)
    elif kind == "shape":  # a consistent file of other images: the digest matches
        obj = torch.load(path, weights_only=True)
        obj["images"] = obj["images"][:, :, :5].contiguous()
        obj["digest"] = render_cache._pixels_digest(obj["images"], obj["done"])
        torch.save(obj, path)
    elif kind == "types":  # tensors where strings and numbers belong
        obj = torch.load(path, weights_only=True)
        obj["codepoint"] = torch.zeros(3)
        torch.save(obj, path)
    elif kind == "other key":
        shutil.copy(other_key_file, path)


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty", "pixels", "shape", "types", "other key"])
def test_a_corrupt_file_is_rendered_again_and_replaced(data_root, tmp_path, monkeypatch, kind):
    expected = _everything(_dataset(disk_cache=False))
    _everything(_dataset())
    other = _dataset(seed=7, disk_cache=tmp_path / "other")
    other.images(0)
    path = _dataset()._disk.path(ord(CHARS[0]))
    _corrupt(kind, path, _class_files(tmp_path / "other")[0].parent / path.name)
    calls = _count_renders(monkeypatch)
    again = _dataset()
    assert torch.equal(_everything(again), expected)
    assert [ch for ch, _ in calls] == [CHARS[0]]
    assert again._disk.load(ord(CHARS[0]), again._svg_digest(0), again.image_shape) is not None  # rewritten
    calls.clear()
    assert torch.equal(_everything(_dataset()), expected) and calls == []


def test_a_write_keeps_the_drawings_already_on_disk(data_root):
    # a process that read the file before another one wrote more drawings must not drop those
    stale = _dataset(drawings=3)
    stale_images = stale.images(0)
    ds = _dataset(drawings=6)
    full = ds.images(0)
    path = ds._disk.path(ord(CHARS[0]))
    before = path.stat()
    stale._disk.save(ord(CHARS[0]), stale._svg_digest(0), stale._cache[0], stale._done[0])
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # nothing new
    images, done = ds._disk.load(ord(CHARS[0]), ds._svg_digest(0), ds.image_shape)
    assert done.tolist() == [True] * 6 and torch.equal(images.float() / 255, full)
    # and a write of drawings the file lacks adds them to those it has
    partial = torch.zeros(8, *ds.image_shape, dtype=torch.uint8)
    partial[6:] = 7
    ds._disk.save(ord(CHARS[0]), ds._svg_digest(0), partial, torch.arange(8) >= 6)
    images, done = ds._disk.load(ord(CHARS[0]), ds._svg_digest(0), ds.image_shape)
    assert done.all() and torch.equal(images[:3].float() / 255, stale_images) and (images[6:] == 7).all()


def test_a_failed_write_keeps_the_file_and_leaves_no_temporary_file(data_root, monkeypatch):
    ds = _dataset(drawings=2)
    ds.images(0)
    path = ds._disk.path(ord(CHARS[0]))
    before = path.read_bytes()
    dead = path.parent / f".{path.name}.999999999.abcdefgh.tmp"  # left by a writer that was killed
    dead.write_bytes(b"half a file")

    def full_disk(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    more = _dataset(drawings=4)
    with pytest.warns(UserWarning, match="No space left on device"):
        images = more.images(0)
    assert torch.equal(images, _dataset(drawings=4, disk_cache=False).images(0))
    assert path.read_bytes() == before
    assert not list(path.parent.glob(".*.tmp"))


_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from warpgrad.data.kanjivg import KanjiDataset, render_cache
    cache, go, mode, drawings, parity = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    ds = KanjiDataset(n_classes=30, drawings=drawings, seed=3, splits={"train": 1.0}, disk_cache=cache)
    # slow writes widen each read-merge-write window, so that without the lock drawings would be lost
    write = render_cache.atomic_write
    render_cache.atomic_write = lambda *args, **kwargs: (time.sleep(0.01), write(*args, **kwargs))
    mine = torch.arange(6) % 2 == parity  # "halves": this process writes every other drawing
    if mode == "halves":
        pixels = KanjiDataset(n_classes=30, drawings=6, seed=3, splits={"train": 1.0}, disk_cache=False)
        images = [pixels.images(c).mul(255).round().to(torch.uint8) * mine[:, None, None, None] for c in range(30)]
    while not go.exists():
        time.sleep(0.005)
    for c in range(30):
        if mode == "dataset":
            ds.images(c)
        else:
            ds._disk.save(ord(ds.classes[c]), ds._svg_digest(c), images[c], mine)
    """
)


@pytest.mark.parametrize("mode", ["dataset", "halves"])
def test_processes_writing_the_same_classes_at_once_leave_whole_files_with_every_drawing(tmp_path, mode):
    """Two processes render and write the same classes at the same time ("dataset": 4 and 6 drawings
    through KanjiDataset; "halves": the even and the odd drawings of each class, straight to the
    cache): every file ends up readable, with all 6 drawings, equal to rendering in one process."""
    cache, go = tmp_path / "cache", tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(cache), str(go), mode, drawings, parity], env=env)
        for drawings, parity in (("4", "0"), ("6", "1"))
    ]
    reference = KanjiDataset(n_classes=30, drawings=6, seed=3, splits={"train": 1.0}, disk_cache=False)
    expected = [reference.images(c) for c in range(30)]
    time.sleep(0.5)
    go.touch()
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    assert len(_class_files(cache)) == 30 and not list(cache.rglob("*.tmp"))
    reader = KanjiDataset(n_classes=30, drawings=6, seed=3, splits={"train": 1.0}, disk_cache=cache)
    for c in range(30):
        found = reader._disk.load(ord(reader.classes[c]), reader._svg_digest(c), reader.image_shape)
        assert found is not None, f"class {c}: no valid file"
        images, done = found
        assert done.tolist() == [True] * 6, f"class {c}: drawings lost in a concurrent write"
        assert torch.equal(images.float() / 255, expected[c])


def test_the_cache_can_be_turned_off(data_root, tmp_path, monkeypatch):
    expected = _everything(_dataset(disk_cache=False))
    assert not data_root.exists()
    monkeypatch.setenv(render_cache.OFF_VARIABLE, "1")
    assert torch.equal(_everything(_dataset()), expected)
    assert torch.equal(_everything(_dataset(disk_cache=tmp_path / "elsewhere")), expected)
    assert not data_root.exists() and not (tmp_path / "elsewhere").exists()
    monkeypatch.setenv(render_cache.OFF_VARIABLE, "0")
    _everything(_dataset())
    assert len(_class_files(data_root)) == len(CHARS)


def test_an_unwritable_cache_warns_once_and_still_renders(tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("in the way of the cache folder")
    expected = _everything(_dataset(disk_cache=False))
    ds = _dataset(disk_cache=blocker)
    with pytest.warns(UserWarning, match="cannot write there") as caught:
        images = _everything(ds)
    assert len(caught) == 1 and torch.equal(images, expected)


@pytest.mark.parametrize("bad", [3, "", None, 1.5])
def test_a_bad_disk_cache_argument_names_the_value(bad):
    with pytest.raises(ValueError, match=f"disk_cache must be True, False or a folder, got {bad!r}"):
        _dataset(disk_cache=bad)
