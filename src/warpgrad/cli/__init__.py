"""Command-line interface: ``warpgrad run | list | show | report | analyze``.

Examples::

    warpgrad list
    warpgrad run sine --method baseline,warpgrad --profile quick --out runs/sine
    warpgrad run sine --out runs/sine --resume
    warpgrad report runs/sine
    warpgrad analyze runs/sine --tasks 8
    warpgrad show sine --profile smoke --set warpgrad.init_weight=0.5

Bad input (an unknown name, a negative seed, a value out of range, a missing, corrupted or
mismatching checkpoint or results file) is reported as one line on stderr with exit code 2. A
non-finite value in training exits with 1, naming the method, step and value. Anything else is a
bug: one line saying so and where the traceback was written, exit 1. Never a traceback on the
terminal; set ``WARPGRAD_DEBUG=1`` to get it instead.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Sequence

from warpgrad import __version__
from warpgrad.cli.run import run_command, seed_argument, seed_list_argument
from warpgrad.distributed import DEVICES, PRECISIONS
from warpgrad.engine.provenance import command_line
from warpgrad.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, TrainingDiverged, UsageError


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are raised (and printed by :func:`main` as one line)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="warpgrad",
        description="Meta-learned update rules: run experiments, list what is available, report results.",
    )
    parser.add_argument("--version", action="version", version=f"warpgrad {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    run = commands.add_parser(
        "run",
        help="meta-train and evaluate methods on an experiment",
        description="Meta-train methods on an experiment, evaluate them on held-out tasks and write "
        "results.json, learning_curves.png and per-method metrics.csv and checkpoint.pt.",
    )
    run.add_argument(
        "experiment",
        help="experiment name (see `warpgrad list`), or module:NAME / file.py:NAME for an experiment of your own",
    )
    run.add_argument(
        "--method",
        default="all",
        metavar="M[,M...]|all",
        help="comma-separated methods, or all (default: all)",
    )
    run.add_argument("--profile", default="quick", help="smoke, quick or paper (default: quick)")
    run.add_argument(
        "--out",
        default=None,
        help="output directory (default: runs/EXPERIMENT-PROFILE/seed-SEED); with --seeds, one seed-SEED "
        "subdirectory per seed",
    )
    seeds = run.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=seed_argument, default=None, help="seed of every random draw (default: 0)")
    seeds.add_argument(
        "--seeds",
        type=seed_list_argument,
        default=None,
        metavar="0-4|0,3,7",
        help="run every seed of a range or list, each into OUT/seed-SEED, and report them together",
    )
    resume = run.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    resume.add_argument(
        "--overwrite", action="store_true", help="start afresh methods that already ran in --out (replacing them)"
    )
    run.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="N",
        help="stop after N meta-steps in this invocation, checkpointed (continue with --resume)",
    )
    _add_set_argument(run)
    run.add_argument(
        "--tune",
        default=None,
        metavar="SETTING=V1,V2,...",
        help="choose a setting from the grid on validation tasks: meta_lr (each method's meta learning rates) or "
        "any --set key; one run per value in OUT/tuning/, the best by final validation metric reported "
        "(see docs/experiments.md)",
    )
    run.add_argument(
        "--device", default="cpu", choices=DEVICES, help="where models, batches and meta-gradients live (default: cpu)"
    )
    run.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="bf16: meta-steps and evaluation under bf16 autocast (meta-gradient error measured in "
        "docs/distributed.md; default fp32)",
    )
    run.add_argument(
        "--nproc",
        type=int,
        default=None,
        metavar="N",
        help="split every meta-batch over N processes on this machine (as torchrun would: gloo on cpu, "
        "nccl on cuda with one GPU per process); the result equals one process's",
    )
    run.add_argument(
        "--log",
        default="none",
        choices=("none", "tensorboard"),
        help="also write every metrics row to OUT/tensorboard/METHOD (needs pip install 'warpgrad[tensorboard]')",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(handler=run_command)

    listing = commands.add_parser("list", help="list experiments, their methods and profiles")
    listing.set_defaults(handler=_list)

    show = commands.add_parser(
        "show",
        help="print an experiment's fully resolved configuration",
        description="Print the schedule, options and every method's resolved options of an experiment at a "
        "profile, with --set overrides applied (JSON).",
    )
    show.add_argument("experiment", help="experiment name (see `warpgrad list`), or module:NAME / file.py:NAME")
    show.add_argument("--profile", default="quick", help="smoke, quick or paper (default: quick)")
    show.add_argument("--method", default="all", metavar="M[,M...]|all", help="methods to show (default: all)")
    _add_set_argument(show)
    show.set_defaults(handler=_show)

    report = commands.add_parser(
        "report",
        help="compare methods across runs and seeds",
        description="Aggregate results.json files: per method the mean over seeds (or over tasks for one seed) "
        "with a Student's t 95%% interval, and paired differences against a reference method.",
    )
    report.add_argument(
        "paths", nargs="+", metavar="DIR", help="run directories or results.json files (searched recursively)"
    )
    report.add_argument("--format", default="text", choices=("text", "md", "latex", "csv"), help="(default: text)")
    report.add_argument("--method", default=None, metavar="M[,M...]", help="methods to show (default: all)")
    report.add_argument(
        "--against", default=None, metavar="M", help="reference of the paired differences (default: the best method)"
    )
    report.set_defaults(handler=_report)

    analyze = commands.add_parser(
        "analyze",
        help="how the inner loop changes each layer's representation",
        description="Per method, layer and inner step s in {0, 1, K/2, K}: linear CKA and RSA between the "
        "representation of held-out tasks' test inputs after s inner steps and at the meta-learned initialisation, "
        "for the final learner and every snapshot the run kept (--set snapshot_every=N when running). "
        "Writes representations.json, cka-METHOD.png, mds.png and, with snapshots, meta_training.png.",
    )
    analyze.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `warpgrad run ... --out RUN_DIR`")
    analyze.add_argument("--out", default=None, help="output directory (default: RUN_DIR/analysis)")
    analyze.add_argument(
        "--tasks", type=int, default=8, metavar="N", help="held-out tasks to average over (default: 8)"
    )
    analyze.add_argument("--method", default=None, metavar="M[,M...]", help="methods to analyze (default: all)")
    analyze.add_argument(
        "--without-warps", action="store_true", help="leave warp layers out of the printed table (JSON: all layers)"
    )
    analyze.add_argument(
        "--no-snapshots", action="store_true", help="analyze the final learners only, not the run's snapshots"
    )
    _add_set_argument(analyze)
    analyze.set_defaults(handler=_analyze)
    return parser


def _add_set_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        type=_setting,
        metavar="KEY=VALUE",
        help="override a profile setting or any method option, e.g. --set ways=20 --set warpgrad.objective=first_order "
        "--set warpgrad.init_weight=0.5 (repeatable; an unknown KEY lists the allowed ones)",
    )


def _setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _dataset_status(name: str | None) -> str:
    if name is None:
        return "generated (no download)"
    try:
        from warpgrad.data.registry import DATASETS
    except ImportError:  # pragma: no cover - the registry ships with the package
        return name
    info = DATASETS.get(name)
    return f"{name}: {info.status()}" if info is not None else name


def _list(args: argparse.Namespace) -> int:
    from warpgrad.experiments import EXPERIMENTS
    from warpgrad.methods.registry import registered

    lines = ["experiments (--set KEY=VALUE overrides a profile setting or a method option):"]
    for experiment in EXPERIMENTS.values():
        lines.append(f"  {experiment.name}: {experiment.description}")
        lines.append(f"    data: {_dataset_status(experiment.dataset)}")
        lines.append(f"    methods: {', '.join(experiment.methods)}")
        width = max(map(len, experiment.profiles))
        for name, profile in experiment.profiles.items():
            lines.append(f"    {name.ljust(width)}  {profile.description}")
    lines.append("meta-learning methods (`warpgrad show EXPERIMENT` prints their resolved options):")
    methods = registered()
    width = max(map(len, methods))
    for name, info in methods.items():
        lines.append(f"  {name.ljust(width)}  {info.description}")
    print("\n".join(lines))
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    import json

    from warpgrad.engine.loop import resolve_experiment, resolve_methods
    from warpgrad.experiments.methods import run_configuration

    experiment = resolve_experiment(args.experiment)
    profile = experiment.resolve(args.profile, dict(args.settings))
    methods = resolve_methods(experiment, args.method)
    print(json.dumps(run_configuration(experiment, profile, methods), indent=2, default=list))
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from warpgrad.engine.report import report_text

    methods = args.method.split(",") if args.method is not None else None
    print(report_text(args.paths, args.format, methods, args.against))
    return EXIT_OK


def _analyze(args: argparse.Namespace) -> int:
    from warpgrad.analysis.representations import analyze_run, summary

    methods = args.method.split(",") if args.method is not None else None
    report = analyze_run(args.run_dir, args.out, args.tasks, methods, dict(args.settings), not args.no_snapshots)
    out = args.out if args.out is not None else os.path.join(args.run_dir, "analysis")
    extra = ", meta_training.png" if any(report["snapshots"].values()) else ""
    print(summary(report, warps=not args.without_warps))
    print(f"written: {out}/representations.json, cka-METHOD.png, mds.png{extra}")
    return EXIT_OK


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    one_line = " ".join(str(message).split())
    print(f"warpgrad: error: {one_line}", file=sys.stderr)
    return code


def _report_bug(error: BaseException) -> int:
    """One line saying an unexpected error is a bug, and where its traceback was written."""
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        fd, path = tempfile.mkstemp(prefix="warpgrad-bug-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"warpgrad {__version__}\n{' '.join(map(shlex.quote, sys.argv))}\n\n{text}")
        where = f"the traceback is in {path}"
    except OSError:
        where = "the traceback could not be written (set WARPGRAD_DEBUG=1 to see it)"
    summary = " ".join(f"{type(error).__name__}: {error}".split())[:200]
    return _fail(f"internal error ({summary}); this is a bug in warpgrad, please report it; {where}", EXIT_FAILURE)


def _options(parser: argparse.ArgumentParser, with_value: bool) -> set[str]:
    """Option strings of ``parser`` and its subcommands (only those taking one value: ``with_value``)."""
    options: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options |= _options(sub, with_value)
        elif action.option_strings and (action.nargs is None or not with_value):
            options.update(action.option_strings)
    return options


def _values_starting_with_a_dash(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``--set -x=1`` as ``--set=-x=1``: argparse would take ``-x=1`` for an option and name neither.
    A known option after a value option (``--out --resume``) stays an option (and a missing value)."""
    takes_value, known = _options(parser, with_value=True), _options(parser, with_value=False)
    joined, i = [], 0
    while i < len(argv):
        following = argv[i + 1] if i + 1 < len(argv) else ""
        if (
            argv[i] in takes_value
            and following.startswith("-")
            and len(following) > 1
            and following.partition("=")[0] not in known
        ):
            joined.append(f"{argv[i]}={following}")
            i += 2
        else:
            joined.append(argv[i])
            i += 1
    return joined


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(_values_starting_with_a_dash(argv, parser))
    except _UsageError as error:
        return _fail(str(error))
    except SystemExit as done:  # --help, --version
        return done.code if isinstance(done.code, int) else EXIT_OK
    args.command_line = command_line(argv)
    debug = os.environ.get("WARPGRAD_DEBUG", "") not in ("", "0")
    try:
        return args.handler(args)
    except BrokenPipeError:  # e.g. `warpgrad list | head`: the reader left, nothing to report
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep interpreter shutdown quiet
        return EXIT_OK
    except UsageError as error:  # bad input, or a corrupted or mismatched file
        if debug:
            raise
        return _fail(str(error))
    except TrainingDiverged as error:
        return _fail(str(error), EXIT_FAILURE)
    except KeyboardInterrupt:
        return _fail("aborted", EXIT_INTERRUPTED)
    except OSError as error:  # the machine refused: disk full, permission, ...
        if debug:
            raise
        name = f" {error.filename}" if getattr(error, "filename", None) else ""
        return _fail(f"cannot write or read{name}: {error.strerror or error}", EXIT_FAILURE)
    except Exception as error:  # noqa: BLE001 - anything else is a bug: one line and a traceback file
        if debug:
            raise
        return _report_bug(error)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
