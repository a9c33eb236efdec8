"""Episodes per second of the maze agents (A2C training: rollout, loss, backward, Adam) and their
distance to this CPU's matrix-product bound.

    python benchmarks/maze_agents.py                  # the figures in docs/rl.md (size 11, 30 mazes)
    python benchmarks/maze_agents.py --threads 2 --episodes 3

Each agent trains ``--episodes`` episodes after one warm-up episode (no burn-in); the figure is the
median time per episode. The bound counts only the matrix products (forward ×3 for the backward
pass) at the rate this CPU reaches on a product of the same shape (the step's largest), measured
here, so "× bound" is how much slower than its matrix products alone an episode runs; for the
plastic agents most of the time is element-wise work on the (B, H, H) traces instead, counted
separately as bytes moved.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from warpgrad.experiments import get_experiment
from warpgrad.methods.rl import A2C, AGENTS, A2CLoss, A2CUpdates
from warpgrad.tasks.rl import N_ACTIONS, OBSERVATION_SIZE, Maze


def matmul_flops_per_step(name: str, B: int, X: int, H: int, A: int) -> int:
    """Forward matrix-product FLOPs of one step of agent ``name`` (2·m·k·n per product)."""
    heads = 2 * B * H * (A + 1)
    if name == "warp-rnn":
        lstm = 2 * B * (X + H + H) * 4 * H  # [x; h] and z into four gates
        gates = 2 * B * H * (X + 4 * H)
        return lstm + gates + 2 * B * (X + H) * H + heads
    plastic = 2 * B * H * H if name in ("hebbian", "backpropamine") else 0  # (W + α ⊙ Hebb) h per env
    outer = 2 * B * H * H if plastic else 0
    return 2 * B * (X + H) * H + plastic + outer + heads


def trace_bytes_per_step(name: str, B: int, H: int) -> int:
    """Bytes of the (B, H, H) float32 trace tensors read or written per forward step (plastic agents)."""
    return 0 if name not in ("hebbian", "backpropamine") else 4 * B * H * H * 7  # α⊙Hebb, bmm, baddbmm, clamp


def measured_rate(B: int, k: int, n: int, repeats: int = 200) -> float:
    """FLOP/s of torch.addmm at (B × k) @ (k × n) on this CPU."""
    a, w, bias = torch.randn(B, k), torch.randn(k, n), torch.randn(n)
    for _ in range(10):
        torch.addmm(bias, a, w)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.addmm(bias, a, w)
    return 2 * B * k * n * repeats / (time.perf_counter() - start)


def episode_times(name: str, size: int, batch: int, hidden: int, episodes: int) -> list[float]:
    profile = get_experiment("maze").profile("quick")
    torch.manual_seed(0)
    agent = AGENTS[name](OBSERVATION_SIZE, N_ACTIONS, hidden)
    options = {**profile.options[name], "burn_in": 0}
    trainer = A2C(agent, A2CLoss(**profile.options["a2c"]), A2CUpdates(**options))
    maze, actions = Maze(size, batch), torch.Generator().manual_seed(0)
    times = []
    for episode in range(episodes + 1):
        start = time.perf_counter()
        trainer.train_episode(maze, torch.Generator().manual_seed(episode), actions)
        times.append(time.perf_counter() - start)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=11)
    parser.add_argument("--batch", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    B, X, H, A, T = args.batch, OBSERVATION_SIZE, args.hidden, N_ACTIONS, 200
    rate = measured_rate(B, X + 2 * H, 4 * H)
    print(
        f"maze size {args.size}, {B} mazes, {T} steps, hidden {H}, {args.threads} thread(s), torch {torch.__version__}"
    )
    print(f"matrix-product rate at ({B}×{X + 2 * H})@({X + 2 * H}×{4 * H}): {rate / 1e9:.1f} GFLOP/s")
    print(f"{'agent':<14} {'s/episode':>9} {'episodes/s':>10} {'GFLOP/ep':>8} {'x bound':>7} {'trace GB/ep':>11}")
    for name in AGENTS:
        seconds = statistics.median(episode_times(name, args.size, B, H, args.episodes))
        flops = 3 * T * matmul_flops_per_step(name, B, X, H, A)
        bound = flops / rate
        trace = 3 * T * trace_bytes_per_step(name, B, H) / 1e9
        figures = f"{flops / 1e9:>8.2f} {seconds / bound:>7.1f} {trace:>11.2f}"
        print(f"{name:<14} {seconds:>9.3f} {1 / seconds:>10.2f} {figures}")


if __name__ == "__main__":
    main()
