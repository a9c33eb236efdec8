"""``python -m warpgrad.experiments.ablation_plot RESULTS_DIR PNG``: a kanji-multishot-ablation
run's test accuracies next to the paper's numbers (:func:`warpgrad.experiments.ablations.plot_ablations`)."""

from __future__ import annotations

import argparse

from warpgrad.engine.results import RESULTS_FILE, read_results
from warpgrad.experiments.ablations import plot_ablations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a kanji-multishot-ablation run's directory")
    parser.add_argument("png")
    args = parser.parse_args(argv)
    plot_ablations(read_results(f"{args.results}/{RESULTS_FILE}"), args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
