"""Trajectories in lockstep (vmapped over tasks) against task-by-task loops written by hand.

Each task draws its batches from its own generator (as the engine's tasks do), so a task's
trajectory must not depend on whether it runs alone, in a loop over tasks or vmapped with the
others; the replay buffer must hold the points a reservoir fed task by task would hold.
"""

import pytest
import torch
from reference import reference_grad, reference_loss, sgd_step, tiny_model
from torch.nn import functional as F

from warpgrad import Leap, Reptile, WarpGrad, adam, partition, sgd
from warpgrad.core.lockstep import lockstep
from warpgrad.core.replay import PointBuffer
from warpgrad.tasks.base import SeededTask

pytestmark = pytest.mark.usefixtures("float64")


class RandomBatchTask:
    """Regression on a fixed random function; every training batch is fresh noise-free draws."""

    metric_name = "mse"
    lower_is_better = True

    def __init__(self, seed):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(2, 1, generator=g)
        self.test_x = torch.randn(5, 2, generator=g)

    def train_batch(self, generator):
        x = torch.randn(4, 2, generator=generator)
        return x, torch.sin(x @ self.w)

    def test_batch(self):
        return self.test_x, torch.sin(self.test_x @ self.w)

    def loss(self, prediction, target):
        return F.mse_loss(prediction, target)

    metric = loss


def seeded_tasks(n=3):
    return [SeededTask(RandomBatchTask(i), torch.Generator().manual_seed(50 + i)) for i in range(n)]


def test_lockstep_visits_the_points_each_task_visits_when_it_runs_alone():
    model = tiny_model()
    theta0, phi = partition(model)
    phi = {k: v.detach() for k, v in phi.items()}
    seen = []
    theta_k, final, _ = lockstep(
        model, sgd(0.1), theta0, phi, seeded_tasks(), 4, torch.Generator(), True, lambda step: seen.append(step)
    )
    for i, task in enumerate(seeded_tasks()):  # the same tasks with fresh generators, one at a time
        theta = {k: v.detach() for k, v in theta0.items()}
        for k in range(4):
            batch = task.train_batch()
            grad = reference_grad(theta, phi, batch)
            assert seen[k].k == k
            torch.testing.assert_close(seen[k].loss[i], reference_loss(theta, phi, batch), rtol=1e-12, atol=1e-14)
            for n in theta:
                torch.testing.assert_close(seen[k].theta[n][i], theta[n], rtol=1e-12, atol=1e-14)
                torch.testing.assert_close(seen[k].grad[n][i], grad[n], rtol=1e-10, atol=1e-13)
            theta = sgd_step(theta, grad, {})
        torch.testing.assert_close(final[i], reference_loss(theta, phi, task.train_batch()), rtol=1e-12, atol=1e-14)
        for n in theta:
            torch.testing.assert_close(theta_k[n][i], theta[n], rtol=1e-12, atol=1e-14)


def test_the_replay_buffer_holds_what_a_reservoir_fed_task_by_task_holds(monkeypatch):
    steps, capacity = 5, 6  # 15 points offered, so slots are overwritten at random
    buffers = []
    real_sample = PointBuffer.sample

    def spy(self, n, generator):
        buffers.append(real_sample(self, self.capacity, torch.Generator()))  # every point, in slot order
        return real_sample(self, n, generator)

    monkeypatch.setattr(PointBuffer, "sample", spy)
    learner = WarpGrad(tiny_model(), sgd(0.1), steps, init="none", buffer_size=capacity, warp_batch=3)
    learner.meta_step(seeded_tasks(), torch.Generator().manual_seed(3))

    theta0, phi = partition(tiny_model())
    phi = {k: v.detach() for k, v in phi.items()}
    generator, reservoir, offered = torch.Generator().manual_seed(3), [], 0
    for i, task in enumerate(seeded_tasks()):
        theta = {k: v.detach() for k, v in theta0.items()}
        for _ in range(steps):
            batch = task.train_batch()
            if len(reservoir) < capacity:
                reservoir.append((i, theta))
            else:
                j = int(torch.randint(offered + 1, (), generator=generator))
                if j < capacity:
                    reservoir[j] = (i, theta)
            offered += 1
            theta = sgd_step(theta, reference_grad(theta, phi, batch), {})
    stored = buffers[0]
    assert stored.task.tolist() == [i for i, _ in reservoir]
    assert sorted(set(stored.task.tolist())) != [0]  # points of several tasks survived
    for j, (_, theta) in enumerate(reservoir):
        for n in theta:
            torch.testing.assert_close(stored.theta[n][j], theta[n], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "options",
    [
        {"algorithm": "offline", "init": "leap"},
        {"algorithm": "online", "init": "leap"},
        {"algorithm": "offline", "init": "maml", "objective": "first_order"},
        {"algorithm": "online", "init": "none", "inner": "adam"},
    ],
)
def test_warpgrad_gives_the_same_meta_gradients_vmapped_and_one_task_at_a_time(options):
    options = dict(options)
    inner = adam(0.05) if options.pop("inner", "sgd") == "adam" else sgd(0.1)
    grads = []
    for batched in (True, False):
        learner = WarpGrad(tiny_model(), inner, 4, buffer_size=7, warp_batch=5, batched=batched, **options)
        grads.append(learner.meta_gradients(seeded_tasks(), torch.Generator().manual_seed(1)))
    assert grads[0].keys() == grads[1].keys()
    for group in grads[0]:
        for name, value in grads[0][group].items():
            torch.testing.assert_close(value, grads[1][group][name], rtol=1e-9, atol=1e-12)
            assert value.abs().max() > 0
    assert grads[0].metrics == pytest.approx(grads[1].metrics, rel=1e-9)


@pytest.mark.parametrize("method", [Leap, Reptile])
def test_leap_and_reptile_give_the_same_meta_gradient_vmapped_and_one_task_at_a_time(method):
    grads = [
        method(tiny_model(), sgd(0.1), 4, batched=batched).meta_gradient(seeded_tasks(), torch.Generator())[0]
        for batched in (True, False)
    ]
    for name, value in grads[0].items():
        torch.testing.assert_close(value, grads[1][name], rtol=1e-9, atol=1e-12)
        assert value.abs().max() > 0


def test_a_bfloat16_buffer_returns_the_points_rounded_to_bfloat16_in_their_own_dtype():
    from warpgrad.core.replay import Points

    g = torch.Generator().manual_seed(0)
    theta = {"w": torch.randn(4, 3, generator=g)}
    state = {"t": torch.arange(4.0)}
    buffer = PointBuffer(4, dtype=torch.bfloat16)
    buffer.plan(4, g)
    buffer.store(torch.tensor([3, 2, 1, 0]), Points(torch.tensor([0, 1, 2, 3]), theta, state))
    out = buffer.sample(4, g)
    assert out.theta["w"].dtype == torch.float64 and out.task.tolist() == [3, 2, 1, 0]
    expected = theta["w"].flip(0).to(torch.bfloat16).double()
    assert torch.equal(out.theta["w"], expected)
    assert 0 < (out.theta["w"] - theta["w"].flip(0)).abs().max() <= 2**-8 * theta["w"].abs().max()


def test_compiled_trajectories_give_the_eager_meta_gradients():
    # torch.compile takes seconds once; where it cannot compile, one warning and the eager step.
    from warpgrad.core import lockstep as lockstep_module

    grads = []
    for compile in (False, True):
        learner = WarpGrad(tiny_model(), sgd(0.1), 3, buffer_size=7, warp_batch=5, compile=compile)
        grads.append(learner.meta_gradients(seeded_tasks(), torch.Generator().manual_seed(1)))
    assert lockstep_module._COMPILED[learner.model] is not None  # it compiled (this machine has a C++ compiler)
    for group in grads[0]:
        for name, value in grads[0][group].items():
            torch.testing.assert_close(grads[1][group][name], value, rtol=1e-9, atol=1e-12)
    assert grads[1].metrics == pytest.approx(grads[0].metrics, rel=1e-9)
