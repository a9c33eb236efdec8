"""``warpgrad run``: one seed or several, here, in ``--nproc`` processes or as a stream experiment."""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from pathlib import Path

from warpgrad.errors import EXIT_INTERRUPTED, EXIT_OK, UsageError


def seed_argument(text: str) -> int:
    """``--seed``'s value: an integer in 0..2**32 - 1."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed {text!r} is not an integer") from None
    if not 0 <= seed < 2**32:
        raise argparse.ArgumentTypeError(f"seed {text!r} is outside 0..{2**32 - 1}")
    return seed


def seed_list_argument(text: str) -> list[int]:
    """``0-4``, ``0,3,7`` or both (``0-2,7``) as a list of distinct seeds in order."""
    seeds: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        low = seed_argument(first)
        high = seed_argument(last) if dash else low
        if high < low or high - low >= 1000:
            raise argparse.ArgumentTypeError(f"seed range {part.strip()!r} must go up, by at most 1000 seeds")
        seeds.extend(s for s in range(low, high + 1) if s not in seeds)
    return seeds


def _run_arguments(args: argparse.Namespace, methods: list[str], out_dir: Path) -> list[str]:
    """``run`` arguments that repeat this invocation (without ``--resume``/``--stop-after``/``--nproc``)."""
    return [
        "run",
        args.experiment,
        "--method",
        ",".join(methods),
        "--profile",
        args.profile,
        "--out",
        str(out_dir),
        "--seed",
        str(args.seed),
        *(["--log", args.log] if args.log != "none" else []),
        *[part for key, value in args.settings for part in ("--set", f"{key}={value}")],
        *(["--tune", args.tune] if args.tune else []),
        *(["--device", args.device] if args.device != "cpu" else []),
        *(["--precision", args.precision] if args.precision != "fp32" else []),
    ]


def _resume_command(args: argparse.Namespace, methods: list[str], out_dir: Path) -> str:
    processes = args.nproc or int(os.environ.get("WORLD_SIZE", "1"))
    nproc = ["--nproc", str(processes)] if processes > 1 else []
    parts = ["warpgrad", *_run_arguments(args, methods, out_dir), *nproc, "--resume"]
    return " ".join(shlex.quote(p) for p in parts)


def _launch(args: argparse.Namespace, methods: list[str], out_dir: Path) -> int:
    """Run this command again as ``args.nproc`` ranks (see :func:`warpgrad.distributed.launch`)."""
    from warpgrad.distributed import launch

    return launch(
        [
            *_run_arguments(args, methods, out_dir),
            *(["--resume"] if args.resume else []),
            *(["--overwrite"] if args.overwrite else []),
            *(["--stop-after", str(args.stop_after)] if args.stop_after is not None else []),
            *(["--no-progress"] if args.no_progress else []),
        ],
        args.nproc,
    )


def run_command(args: argparse.Namespace) -> int:
    """``warpgrad run``: every seed in turn, then (for several) their report."""
    from warpgrad.engine import default_out_dir
    from warpgrad.engine.logs import check_logger
    from warpgrad.engine.loop import resolve_experiment, resolve_methods
    from warpgrad.engine.outdir import check_not_existing, check_out_dir
    from warpgrad.engine.results import RESULTS_FILE, load_results
    from warpgrad.experiments import StreamExperiment
    from warpgrad.experiments.methods import run_configuration

    experiment = resolve_experiment(args.experiment)
    settings = dict(args.settings)
    profile = experiment.resolve(args.profile, settings)  # unknown keys and bad values: exit 2 now
    methods = resolve_methods(experiment, args.method)
    run_configuration(experiment, profile, methods)  # every method's options checked before anything runs
    if args.tune is not None:
        from warpgrad.engine.tuning import parse_grid

        parse_grid(args.tune)
        if isinstance(experiment, StreamExperiment):
            raise UsageError(f"--tune chooses settings of meta-learning runs; {experiment.name} is a stream experiment")
    check_logger(args.log)
    seeds = args.seeds if args.seeds is not None else [0 if args.seed is None else args.seed]
    base = check_out_dir(args.out) if args.out is not None else None
    if args.seeds is not None and base is None:
        base = default_out_dir(experiment.name, args.profile).parent
    outs = {
        seed: (base / f"seed-{seed}" if args.seeds is not None else base)
        or default_out_dir(experiment.name, args.profile, seed)
        for seed in seeds
    }
    for out_dir in outs.values():  # every seed's directory checked before the first seed starts
        check_out_dir(out_dir)
        if not (args.resume or args.overwrite):
            check_not_existing(out_dir, methods, load_results(out_dir / RESULTS_FILE))
    for seed, out_dir in outs.items():
        args.seed = seed
        code = _run_seed(args, experiment, methods, profile, settings, out_dir)
        if code != EXIT_OK:
            return code
    if len(seeds) > 1 and args.stop_after is None:
        from warpgrad.engine.report import report_text

        print(f"\nacross seeds {', '.join(map(str, seeds))}:")
        print(report_text([str(p) for p in outs.values()], "text", methods))
        runner = importlib.import_module(getattr(experiment, "runner", "warpgrad.engine"))
        if hasattr(runner, "after_seeds"):  # e.g. the RL runner's reward curves over seeds
            print(runner.after_seeds(list(outs.values())))
    return EXIT_OK


def _run_seed(args: argparse.Namespace, experiment, methods: list[str], profile, settings, out_dir: Path) -> int:
    """``run`` of one seed into ``out_dir``: here, in ``--nproc`` processes, or as a stream experiment."""
    import torch

    from warpgrad.distributed import Cluster, launched_by_torchrun, resolve_device
    from warpgrad.engine.loop import check_seed
    from warpgrad.experiments import StreamExperiment

    resolve_device(args.device)
    under_torchrun = launched_by_torchrun()
    if args.nproc is not None:
        if args.nproc < 1:
            raise UsageError(f"--nproc must be >= 1, got {args.nproc}")
        if under_torchrun:
            raise UsageError("--nproc starts the processes itself; under torchrun leave it out")
    if isinstance(experiment, StreamExperiment):
        if (args.nproc or 1) > 1 or under_torchrun:
            raise UsageError(f"{experiment.name} is a stream experiment: it runs in one process (no --nproc/torchrun)")
        return _run_streams(args, experiment, methods, profile, out_dir)
    if args.nproc is not None and args.nproc > 1:
        check_seed(args.seed)
        if profile.meta_batch < args.nproc:
            raise UsageError(
                f"meta_batch = {profile.meta_batch} is smaller than --nproc {args.nproc}; every process needs a task"
            )
        if args.device == "cuda" and args.nproc > torch.cuda.device_count():
            raise UsageError(
                f"--nproc {args.nproc} with --device cuda needs {args.nproc} GPUs; {torch.cuda.device_count()} visible"
            )
        return _launch(args, methods, out_dir)
    cluster = Cluster.from_environment(args.device)
    try:
        return _run_here(args, experiment, methods, settings, out_dir, cluster)
    finally:
        cluster.close()


def _run_here(
    args: argparse.Namespace, experiment, methods: list[str], settings: dict[str, str], out_dir: Path, cluster
) -> int:
    """``_run`` in this process (one of several ranks, or the only one)."""
    from warpgrad.engine import PLOT_FILE, RESULTS_FILE, format_table, run

    resume = _resume_command(args, methods, out_dir)
    say = print if cluster.is_main else (lambda *a, **k: None)
    tune = {}
    if args.tune is not None:
        from warpgrad.engine.tuning import parse_grid, tuned_run

        run, tune = tuned_run, {"grid": parse_grid(args.tune)}
    try:
        results = run(
            experiment,
            methods,
            args.profile,
            seed=args.seed,
            out_dir=out_dir,
            **tune,
            resume=args.resume,
            stop_after=args.stop_after,
            progress=not args.no_progress,
            settings=settings,
            cluster=cluster,
            precision=args.precision,
            overwrite=args.overwrite,
            log=args.log,
            command=args.command_line,
        )
    except KeyboardInterrupt as stop:
        return _interrupted(stop, "meta-step", resume, say)
    if results is None:
        say(f"stopped after {args.stop_after} meta-steps as asked; resume with: {resume}")
        return EXIT_OK
    say(format_table(results, methods))
    say(f"\nresults: {out_dir / RESULTS_FILE}")
    say(f"learning curves: {out_dir / PLOT_FILE}")
    snapshots = ", snapshots/step-SSSSSS.pt" if experiment.resolve(args.profile, settings).snapshot_every else ""
    say(f"per-method metrics.csv{snapshots} and checkpoint.pt: {out_dir}/METHOD/")
    return EXIT_OK


def _interrupted(stop: KeyboardInterrupt, unit: str, resume: str, say) -> int:
    """Say how a stopped run (Ctrl-C: a checkpoint saved after the last ``unit``, or a second
    Ctrl-C: the last saved checkpoints) is resumed; the exit code."""
    from warpgrad.engine.interrupt import TrainingInterrupted

    if isinstance(stop, TrainingInterrupted):
        what = f"interrupted {stop.method} after {unit} {stop.step} of {stop.total} (checkpoint saved)"
        say(f"warpgrad: {what}; resume with: {resume}", file=sys.stderr)
    else:
        say(f"warpgrad: aborted; resume from the last saved checkpoints with: {resume}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _run_streams(args: argparse.Namespace, experiment, methods: list[str], profile, out_dir: Path) -> int:
    """A stream, sequential or RL experiment, run by its own runner module (``experiment.runner``);
    ``--resume``/``--stop-after`` where the runner keeps checkpoints (``CHECKPOINTS = True``)."""
    from warpgrad.engine.loop import check_seed

    runner = importlib.import_module(experiment.runner)
    checkpoints = getattr(runner, "CHECKPOINTS", False) and getattr(experiment, "resumable", True)
    unit = getattr(runner, "UNIT", "episodes")
    if not checkpoints and (args.resume or args.stop_after is not None):
        kind = "is a stream experiment" if runner.__name__.endswith("streams") else "has no checkpoints"
        raise UsageError(
            f"{experiment.name} {kind} (minutes, no checkpoints): --resume and "
            "--stop-after are not available; run it again instead"
        )
    check_seed(args.seed)
    if args.log != "none":
        raise UsageError(f"{experiment.name} has no logger: --log {args.log} is not available for it")
    resume = _resume_command(args, methods, out_dir)
    options = {"resume": args.resume, "stop_after": args.stop_after} if checkpoints else {}
    try:
        results = runner.run(
            experiment,
            methods,
            profile,
            args.seed,
            out_dir,
            progress=not args.no_progress,
            overwrite=args.overwrite,
            command=args.command_line,
            **options,
        )
    except KeyboardInterrupt as stop:
        if not checkpoints:
            raise
        return _interrupted(stop, unit.rstrip("s"), resume, print)
    if results is None:
        print(f"stopped after {args.stop_after} {unit} as asked; resume with: {resume}")
        return EXIT_OK
    print(runner.table(results))
    print(f"\n{runner.outputs(out_dir)}")
    return EXIT_OK
