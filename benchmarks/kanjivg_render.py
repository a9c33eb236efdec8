"""KanjiVG rendering speed (images/s on one CPU thread), and the sample grid in docs/kanjivg.md.

Five figures per image size, each the best of ``--repeats`` runs over the same characters:

* ``dataset``: a fresh :class:`~warpgrad.data.kanjivg.KanjiDataset` without the disk cache, every
  drawing of every class accessed once: parsing the SVG, planning the flattening and rendering;
* ``batched``: rendering only, the 20 drawings of a class in one call (what the dataset does);
* ``single``: rendering only, one drawing per call;
* ``cold``: as ``dataset``, with an empty disk cache that it fills (what a first process costs);
* ``warm``: a new process (empty memory cache) reading that disk cache; ``ratio`` is warm / cold.

The disk caches are temporary folders in ``--cache-in`` (default: the system's), never the data root.

    python benchmarks/kanjivg_render.py                    # the figures in docs/kanjivg.md
    python benchmarks/kanjivg_render.py --grid docs/kanjivg_samples.png
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import torch

from warpgrad.data import kanjivg as kv


def measure(size: int, n_classes: int, drawings: int, repeats: int) -> dict[str, float]:
    best = {"dataset": 0.0, "batched": 0.0, "single": 0.0}
    for _ in range(repeats):
        ds = kv.KanjiDataset(n_classes=n_classes, drawings=drawings, image_size=size, seed=0, disk_cache=False)
        best["dataset"] = max(best["dataset"], read_all(ds))
        plans = [ds._plans[c] for c in range(n_classes)]
        start = time.perf_counter()
        for plan in plans:
            kv._draw(plan, [torch.Generator().manual_seed(j) for j in range(drawings)], kv.DEFAULT_JITTER)
        best["batched"] = max(best["batched"], n_classes * drawings / (time.perf_counter() - start))
        start = time.perf_counter()
        for plan in plans[: n_classes // 4]:
            for j in range(drawings):
                kv._draw(plan, [torch.Generator().manual_seed(j)], kv.DEFAULT_JITTER)
        best["single"] = max(best["single"], n_classes // 4 * drawings / (time.perf_counter() - start))
    return best


def read_all(ds: kv.KanjiDataset) -> float:
    """Images/s of accessing every drawing of every class once."""
    start = time.perf_counter()
    for c in range(len(ds.classes)):
        ds.images(c)
    return len(ds.classes) * ds.drawings / (time.perf_counter() - start)


def measure_disk_cache(size: int, n_classes: int, drawings: int, repeats: int, parent: str | None) -> dict[str, float]:
    """``cold``: a dataset filling an empty disk cache; ``warm``: new processes reading it."""
    best = {"cold": 0.0, "warm": 0.0}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="kanjivg-render-cache-", dir=parent) as folder:
            ds = kv.KanjiDataset(n_classes=n_classes, drawings=drawings, image_size=size, seed=0, disk_cache=folder)
            best["cold"] = max(best["cold"], read_all(ds))
            argv = [sys.executable, __file__, "--read-cache", folder, "--sizes", str(size)]
            argv += ["--classes", str(n_classes), "--drawings", str(drawings)]
            warm = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            best["warm"] = max(best["warm"], float(warm))
    return best


def read_cache(folder: str, size: int, n_classes: int, drawings: int) -> None:
    """In a new process: print the images/s of a dataset that finds every drawing in ``folder``."""
    ds = kv.KanjiDataset(n_classes=n_classes, drawings=drawings, image_size=size, seed=0, disk_cache=folder)
    ds._render = None  # type: ignore[method-assign]  # fail loudly if anything is not in the cache
    print(read_all(ds))


def grid(path: str, n_classes: int = 12, drawings: int = 12, size: int = 28) -> None:
    """Rows: characters; column 0 the undeformed rendering, then jittered drawings. 2× nearest upscale."""
    from PIL import Image  # comes with matplotlib

    ds = kv.KanjiDataset(n_classes=n_classes, drawings=drawings, image_size=size, seed=0, disk_cache=False)
    rows = []
    for c in range(n_classes):
        tiles = [kv.render(kv.load_strokes(ds.classes[c]), size)[0], *ds.images(c)[:, 0]]
        rows.append(torch.cat([torch.nn.functional.pad(t, (1, 1, 1, 1), value=0.2) for t in tiles], 1))
    image = 1 - torch.cat(rows, 0).repeat_interleave(2, 0).repeat_interleave(2, 1)
    Image.fromarray((image * 255).round().to(torch.uint8).numpy(), mode="L").save(path, optimize=True)
    print(f"wrote {path}: {', '.join(f'{ch} ({g})' for ch, g in zip(ds.classes, ds.groups))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="28,84")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--drawings", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grid", help="also write a sample grid PNG here")
    parser.add_argument("--cache-in", help="folder for the temporary disk caches (default: the system's)")
    parser.add_argument("--read-cache", help=argparse.SUPPRESS)  # the warm half of measure_disk_cache
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.read_cache:
        read_cache(args.read_cache, int(args.sizes), args.classes, args.drawings)
        return
    kv.KanjiDataset(n_classes=args.classes, disk_cache=False)  # list the files once, outside the timings
    print(f"images/s on 1 thread, {args.classes} classes × {args.drawings} drawings, best of {args.repeats}")
    print(f"{'size':>5} {'dataset':>9} {'batched':>9} {'single':>9} {'cold':>9} {'warm':>9} {'ratio':>7}")
    for size in map(int, args.sizes.split(",")):
        r = measure(size, args.classes, args.drawings, args.repeats)
        r |= measure_disk_cache(size, args.classes, args.drawings, args.repeats, args.cache_in)
        print(
            f"{size:>5} {r['dataset']:>9.0f} {r['batched']:>9.0f} {r['single']:>9.0f} "
            f"{r['cold']:>9.0f} {r['warm']:>9.0f} {r['warm'] / r['cold']:>6.1f}×"
        )
    if args.grid:
        grid(args.grid)


if __name__ == "__main__":
    main()
