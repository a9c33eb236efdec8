"""Every offline experiment's smoke profile, every method: the numbers, to compare across refactors.

Usage:
    python benchmarks/smoke_numbers.py OUT.json          # run and write {experiment: {method: numbers}}
    python benchmarks/smoke_numbers.py OUT.json --compare BEFORE.json   # and exit 1 naming any difference

The numbers are the per-task test metrics and losses of each method (and each stream method's
accuracy matrices): a refactor that keeps every experiment bit-equal leaves them unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

OFFLINE = ("sine", "sine-continual", "kanji-multishot", "kanji-fewshot", "digits-permuted", "kanji-sequential")


def _untimed(value):
    """``value`` without wall-clock fields (they differ run to run)."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if "time" not in k}
    return value


def numbers(entry: dict) -> dict:
    keep = {}
    for key in ("mean", "ci95", "per_task", "loss_mean", "steps", "accuracy", "matrices", "runs", "extra"):
        if key in entry:
            keep[key] = entry[key]
    if not keep:
        keep = {k: v for k, v in entry.items() if "time" not in k and k != "history"}
    return _untimed(keep)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--compare", type=Path, default=None)
    parser.add_argument("--only", default=",".join(OFFLINE))
    args = parser.parse_args()
    import warpgrad.cli as cli

    collected: dict[str, dict] = {}
    for experiment in args.only.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            code = cli.main(["run", experiment, "--profile", "smoke", "--out", tmp, "--no-progress"])
            if code != 0:
                print(f"{experiment}: exit {code}", file=sys.stderr)
                return code
            results = json.loads((Path(tmp) / "results.json").read_text())
        collected[experiment] = {m: numbers(e) for m, e in results["methods"].items()}
    args.out.write_text(json.dumps(collected, indent=1, sort_keys=True))
    if args.compare is None:
        return 0
    before = json.loads(args.compare.read_text())
    differ = 0
    for experiment, methods in collected.items():
        for method, values in methods.items():
            old = before.get(experiment, {}).get(method)
            if old is None:
                print(f"new (not in {args.compare}): {experiment}/{method}")
            elif _untimed(old) != values:
                differ += 1
                print(f"DIFFERS: {experiment}/{method}")
    print(f"{differ} differences" if differ else "every method in both files: smoke numbers bit-equal")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
