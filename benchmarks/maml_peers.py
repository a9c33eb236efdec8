"""Second-order MAML: warpgrad.MAML against a plain torch.func loop, ``higher`` and ``torchopt``.

Setup: Conv4-32 (4 × [conv3×3-32 → batch norm → ReLU → maxpool 2], then linear) on random 28×28
single-channel images, 5-way 5-shot with 15 queries per class, 4 tasks per meta-batch, 5 inner
SGD steps at lr 0.4, second order. Each method computes the meta-gradient of the mean query
loss w.r.t. the initial weights (no meta-optimiser step); all start from the same weights and
data. The peers run a torch ``nn.BatchNorm2d(track_running_stats=False)`` twin of the model.
``warpgrad loop NHWC`` is the per-task loop with the learner's ``channels_last`` set.

Timing: one warm-up call each, then ``--repeats`` rounds that call every method once in turn
(interleaved, so load from other processes hits them alike); the median s/meta-batch and the
fastest peer's median divided by each method's (> 1: faster than every peer).

Accuracy: max |g32 − g64| over the meta-gradient's entries, where g64 is the torch.func loop in
float64 on the same (float32-representable) weights and data, on ``--error-seeds`` data seeds.
ReLU and max-pool switch where float32 rounding moves a value across a tie, and 5 steps at lr 0.4
amplify a switch to ~1e-2 of the meta-gradient, so one seed's error is mostly luck: the median
and the max over seeds are printed. Batch norm's own float32 precision is measured alone.

FLOP bound: conv/linear multiply-adds only, counted per layer. Per inner step on S support
images: forward F_S, backward 2 F_S (input and weight gradients), and in the outer reverse pass
the forward's reverse again (2 F_S) plus the reverse of the backward, whose two products each
have two inputs (4 F_S): 9 F_S. The query (Q images): forward, then backward = 3 F_Q. Layer 1
needs no input gradient, which the count leaves in (< 3 %). Divided by the rate of a big
conv2d timed in the same run, it is a lower bound on the time no implementation can beat.

    python benchmarks/maml_peers.py                   # 2 threads, 7 rounds, 3 error seeds
    python benchmarks/maml_peers.py --threads 1 --repeats 3 --error-seeds 1

Peers are optional (``pip install -e '.[bench]'``); a missing one is skipped with a note. With
more torch threads than idle cores, OpenMP's spin-waiting makes every method several times
slower and the timings meaningless: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from warpgrad import MAML, Conv4, sgd
from warpgrad.tasks.classification import Episode

WAYS, SHOTS, QUERIES, META_BATCH, STEPS, LR, WIDTH, SIZE = 5, 5, 15, 4, 5, 0.4, 32, 28

Grads = list[Tensor]


def make_tasks(dtype: torch.dtype, seed: int = 0) -> list[Episode]:
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for _ in range(META_BATCH):
        xs = torch.randn(WAYS * SHOTS, 1, SIZE, SIZE, generator=g).to(dtype)  # float32 values in both dtypes
        xq = torch.randn(WAYS * QUERIES, 1, SIZE, SIZE, generator=g).to(dtype)
        ys = torch.arange(WAYS).repeat(SHOTS)
        yq = torch.arange(WAYS).repeat(QUERIES)
        tasks.append(Episode(xs, ys, xq, yq, list(range(WAYS))))
    return tasks


def make_models(dtype: torch.dtype, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """Conv4-32 with warpgrad's BatchNorm, and its twin with torch's (same weights)."""
    torch.manual_seed(seed)
    ours = Conv4(1, WAYS, image_size=SIZE, width=WIDTH).to(dtype)
    twin = Conv4(1, WAYS, image_size=SIZE, width=WIDTH).to(dtype)
    for i in range(1, 16, 4):
        twin.features[i] = nn.BatchNorm2d(WIDTH, track_running_stats=False).to(dtype)
    twin.load_state_dict(ours.state_dict())
    return ours, twin


# ---------------------------------------------------------------- the methods


def warpgrad_maml(batched: bool, nhwc: bool = False) -> Callable[[nn.Module, nn.Module, list[Episode]], Grads]:
    def run(ours: nn.Module, twin: nn.Module, tasks: list[Episode]) -> Grads:
        learner = MAML(ours, sgd(LR), STEPS, batched=batched)
        learner.channels_last = nhwc
        grads = learner.meta_gradients(tasks, torch.Generator().manual_seed(0))["init"]
        return list(grads.values())

    return run


def torch_func_loop(ours: nn.Module, twin: nn.Module, tasks: list[Episode]) -> Grads:
    """The textbook loop: torch.func.grad inner steps per task, one autograd.grad at the end."""
    params = dict(twin.named_parameters())

    def loss(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(torch.func.functional_call(twin, p, (x,)), y)

    total = 0.0
    for task in tasks:
        theta = params
        for _ in range(STEPS):
            g = torch.func.grad(loss)(theta, task.support_x, task.support_y)
            theta = {k: theta[k] - LR * g[k] for k in theta}
        total = total + loss(theta, task.query_x, task.query_y)
    return list(torch.autograd.grad(total / len(tasks), list(params.values())))


def higher_maml(ours: nn.Module, twin: nn.Module, tasks: list[Episode]) -> Grads:
    import higher

    inner = torch.optim.SGD(twin.parameters(), lr=LR)
    total = 0.0
    for task in tasks:
        with higher.innerloop_ctx(twin, inner, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(STEPS):
                diffopt.step(F.cross_entropy(fmodel(task.support_x), task.support_y))
            total = total + F.cross_entropy(fmodel(task.query_x), task.query_y)
    return list(torch.autograd.grad(total / len(tasks), list(twin.parameters())))


def torchopt_maml(ours: nn.Module, twin: nn.Module, tasks: list[Episode]) -> Grads:
    import torchopt

    inner = torchopt.MetaSGD(twin, lr=LR)
    start = torchopt.extract_state_dict(twin)
    params = list(twin.parameters())
    total = 0.0
    for task in tasks:
        for _ in range(STEPS):
            inner.step(F.cross_entropy(twin(task.support_x), task.support_y))
        total = total + F.cross_entropy(twin(task.query_x), task.query_y)
        torchopt.recover_state_dict(twin, start)
    return list(torch.autograd.grad(total / len(tasks), params))


def available_peers() -> tuple[dict[str, Callable], list[str]]:
    peers: dict[str, Callable] = {"torch.func loop": torch_func_loop}
    notes = []
    for name, fn in (("higher", higher_maml), ("torchopt", torchopt_maml)):
        try:
            __import__(name)
        except Exception as error:  # an incompatible build can fail with more than ImportError
            notes.append(f"{name} skipped: {type(error).__name__}: {error}")
            continue
        peers[name] = fn
    return peers, notes


# ---------------------------------------------------------------- FLOPs


def meta_batch_flops() -> float:
    """Conv/linear FLOPs (2 per multiply-add) of one second-order meta-batch (module docstring)."""
    macs_per_image, channels, size = 0, 1, SIZE
    for _ in range(4):
        macs_per_image += size * size * WIDTH * channels * 9
        channels, size = WIDTH, size // 2
    macs_per_image += WIDTH * size * size * WAYS
    per_task = STEPS * 9 * WAYS * SHOTS + 3 * WAYS * QUERIES
    return 2.0 * macs_per_image * per_task * META_BATCH


def conv_rate(repeats: int = 5) -> float:
    """FLOP/s of a big float32 conv2d (32→32 channels, 3×3, 28×28, batch 256): the machine's rate."""
    x, w = torch.randn(256, WIDTH, SIZE, SIZE), torch.randn(WIDTH, WIDTH, 3, 3)
    F.conv2d(x, w, padding=1)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        F.conv2d(x, w, padding=1)
        times.append(time.perf_counter() - start)
    return 2.0 * 256 * SIZE * SIZE * WIDTH * WIDTH * 9 / statistics.median(times)


# ---------------------------------------------------------------- accuracy


def max_error(got: Grads, reference: Grads) -> float:
    return max(float((g.double() - r).abs().max()) for g, r in zip(got, reference))


def meta_gradient_errors(methods: dict[str, Callable], seeds: int) -> tuple[dict[str, list[float]], dict, float]:
    """Per method: the float32 max error on each of ``seeds`` problems (data seeds 0, 1, ...), and
    its float64 error on problem 0 (exactness); the reference's largest entry on problem 0."""
    errors: dict[str, list[float]] = {name: [] for name in methods}
    errors64: dict[str, float] = {}
    scale = 0.0
    for seed in range(seeds):
        (ours64, twin64), tasks64 = make_models(torch.float64), make_tasks(torch.float64, seed)
        reference = torch_func_loop(ours64, twin64, tasks64)
        (ours, twin), tasks = make_models(torch.float32), make_tasks(torch.float32, seed)
        for name, fn in methods.items():
            errors[name].append(max_error(fn(ours, twin, tasks), reference))
            if seed == 0:
                errors64[name] = max_error(fn(ours64, twin64, tasks64), reference)
                scale = max(float(r.abs().max()) for r in reference)
    return errors, errors64, scale


def batch_norm_errors(offset: float) -> dict[str, tuple[float, float, float]]:
    """Batch norm alone on a Conv4 layer-2-sized input whose channel means are ``offset`` (spread 2):
    the largest float32 relative error vs float64 of its value, of its first derivatives (w.r.t.
    x, w, b of Σ sin(y) p) and of its second derivatives (w.r.t. x, w of ⟨∂/∂x, p'⟩ + Σ ∂/∂w)."""
    from warpgrad.core.batchnorm import batch_norm

    gen = torch.Generator().manual_seed(0)
    x64 = (torch.randn(25, WIDTH, 14, 14, generator=gen, dtype=torch.float64) * 2 + offset).float().double()
    probes = [torch.randn(25, WIDTH, 14, 14, generator=gen, dtype=torch.float64) for _ in range(2)]

    def derivatives(norm: Callable, dtype: torch.dtype) -> list[Tensor]:
        x = x64.to(dtype).requires_grad_()
        w, b = torch.linspace(0.5, 2, WIDTH, dtype=dtype, requires_grad=True), torch.zeros(WIDTH, dtype=dtype)
        y = norm(x, w, b.requires_grad_())
        first = torch.autograd.grad((torch.sin(y) * probes[0].to(dtype)).sum(), [x, w, b], create_graph=True)
        second = torch.autograd.grad((first[0] * probes[1].to(dtype)).sum() + first[1].sum(), [x, w])
        return [t.detach().double() for t in (y, *first, *second)]

    def torch_bn(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        return F.batch_norm(x, None, None, w, b, training=True)

    exact = derivatives(torch_bn, torch.float64)
    out = {}
    for name, norm in (("warpgrad", batch_norm), ("torch", torch_bn)):
        errors = [float((g - e).abs().max() / e.abs().max()) for g, e in zip(derivatives(norm, torch.float32), exact)]
        out[name] = (errors[0], max(errors[1:4]), max(errors[4:]))
    return out


# ---------------------------------------------------------------- the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--error-seeds", type=int, default=3, help="problems the float32 error is measured on")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    peers, notes = available_peers()
    methods = {
        "warpgrad.MAML vmap": warpgrad_maml(True),
        "warpgrad.MAML loop": warpgrad_maml(False),
        "warpgrad loop NHWC": warpgrad_maml(False, nhwc=True),
        **peers,
    }
    errors, errors64, scale = meta_gradient_errors(methods, args.error_seeds)  # also the warm-up calls
    (ours, twin), tasks = make_models(torch.float32), make_tasks(torch.float32)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn(ours, twin, tasks)
            times[name].append(time.perf_counter() - start)
    rate = conv_rate()
    bound = meta_batch_flops() / rate

    medians = {name: statistics.median(t) for name, t in times.items()}
    fastest_peer = min(medians[name] for name in peers)
    print(
        f"second-order MAML, Conv4-{WIDTH} {SIZE}x{SIZE}, {WAYS}-way {SHOTS}-shot {QUERIES} queries, "
        f"meta-batch {META_BATCH}, K={STEPS}, lr {LR}; torch {torch.__version__}, {args.threads} threads, "
        f"{args.repeats} interleaved rounds"
    )
    print(
        f"{'method':20s} {'s/meta-batch':>12s} {'fastest peer/it':>16s} {'x FLOP bound':>13s} "
        f"{'f32 err median':>15s} {'f32 err max':>12s} {'f64 err':>9s}"
    )
    for name in methods:
        print(
            f"{name:20s} {medians[name]:12.3f} {fastest_peer / medians[name]:15.2f}x {medians[name] / bound:12.1f}x "
            f"{statistics.median(errors[name]):15.1e} {max(errors[name]):12.1e} {errors64[name]:9.0e}"
        )
    print(
        f"f32 err: max |g32 - g64| on each of {args.error_seeds} data seeds (largest entry of g: {scale:.2f}), "
        "g64 = the torch.func loop in float64 on the same data; f64 err: the method in float64 (seed 0)"
    )
    print(
        f"FLOP bound: {meta_batch_flops() / 1e9:.2f} GFLOP of conv/linear / {rate / 1e9:.1f} GFLOP/s (a big "
        f"conv2d, same threads) = {bound:.3f} s"
    )
    print("batch norm alone, float32 max relative error (value / first derivatives / second derivatives):")
    for offset in (0.0, 100.0):
        bn = {name: " / ".join(f"{e:.1e}" for e in errors) for name, errors in batch_norm_errors(offset).items()}
        print(f"  channel means {offset:>3g} (spread 2): warpgrad {bn['warpgrad']}   torch {bn['torch']}")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
