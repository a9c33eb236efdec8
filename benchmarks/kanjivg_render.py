"""KanjiVG rendering speed (images/s on one CPU thread), and the sample grid in docs/kanjivg.md.

Three figures per image size, each the best of ``--repeats`` runs over the same characters:

* ``dataset``: a fresh :class:`~warpgrad.data.kanjivg.KanjiDataset`, every drawing of every class
  accessed once: parsing the SVG, planning the flattening and rendering (what a first epoch costs);
* ``batched``: rendering only, the 20 drawings of a class in one call (what the dataset does);
* ``single``: rendering only, one drawing per call.

    python benchmarks/kanjivg_render.py                    # the figures in docs/kanjivg.md
    python benchmarks/kanjivg_render.py --grid docs/kanjivg_samples.png
"""

from __future__ import annotations

import argparse
import time

import torch

from warpgrad.data import kanjivg as kv


def measure(size: int, n_classes: int, drawings: int, repeats: int) -> dict[str, float]:
    best = {"dataset": 0.0, "batched": 0.0, "single": 0.0}
    for _ in range(repeats):
        ds = kv.KanjiDataset(n_classes=n_classes, drawings=drawings, image_size=size, seed=0)
        start = time.perf_counter()
        for c in range(n_classes):
            ds.images(c)
        best["dataset"] = max(best["dataset"], n_classes * drawings / (time.perf_counter() - start))
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


def grid(path: str, n_classes: int = 12, drawings: int = 12, size: int = 28) -> None:
    """Rows: characters; column 0 the undeformed rendering, then jittered drawings. 2× nearest upscale."""
    from PIL import Image  # comes with matplotlib

    ds = kv.KanjiDataset(n_classes=n_classes, drawings=drawings, image_size=size, seed=0)
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
    args = parser.parse_args()
    torch.set_num_threads(1)
    kv.KanjiDataset(n_classes=args.classes)  # list the files once, outside the timings
    print(f"images/s on 1 thread, {args.classes} classes × {args.drawings} drawings, best of {args.repeats}")
    print(f"{'size':>5} {'dataset':>9} {'batched':>9} {'single':>9}")
    for size in map(int, args.sizes.split(",")):
        r = measure(size, args.classes, args.drawings, args.repeats)
        print(f"{size:>5} {r['dataset']:>9.0f} {r['batched']:>9.0f} {r['single']:>9.0f}")
    if args.grid:
        grid(args.grid)


if __name__ == "__main__":
    main()
