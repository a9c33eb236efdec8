"""ANIL (MAML adapting only the head) against a per-task ``create_graph=True`` loop, float64."""

import pytest
import torch
from reference import FixedTask, tiny_model
from torch.func import functional_call
from torch.nn import functional as F

from warpgrad import ANIL, partition, sgd
from warpgrad.methods.registry import make_config, method_info

pytestmark = pytest.mark.usefixtures("float64")

LR, STEPS = 0.1, 3
HEAD = ("layers.3.weight", "layers.3.bias")  # the tiny model's output layer


def test_anil_meta_gradient_equals_a_per_task_loop_over_the_head_only():
    tasks = [FixedTask(0), FixedTask(1)]
    learner = ANIL(tiny_model(), sgd(LR), STEPS)
    net = learner.model
    params = dict(net.named_parameters())
    got = learner.meta_gradients(tasks, torch.Generator())["init"]

    head0 = {k: params[k] for k in HEAD}
    body = {k: v for k, v in params.items() if k not in HEAD and ".module." not in k}  # warps held fixed
    warps = {k: v.detach() for k, v in params.items() if ".module." in k}
    losses = []
    for task in tasks:
        head = dict(head0)
        for _ in range(STEPS):
            loss = F.mse_loss(functional_call(net, {**body, **warps, **head}, (task.train[0],)), task.train[1])
            grads = torch.autograd.grad(loss, list(head.values()), create_graph=True)
            head = {k: head[k] - LR * g for k, g in zip(head, grads)}
        losses.append(F.mse_loss(functional_call(net, {**body, **warps, **head}, (task.test[0],)), task.test[1]))
    learned = {**head0, **body}
    expected = dict(zip(learned, torch.autograd.grad(torch.stack(losses).mean(), list(learned.values()))))
    assert set(got) == set(expected)  # head and body are meta-learned, the warps are not
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-9, atol=1e-12)
    assert float(expected["layers.0.weight"].abs().max()) > 1e-4  # the body's meta-gradient is not zero


def test_the_body_stays_fixed_during_adaptation():
    learner = ANIL(tiny_model(), sgd(LR), STEPS)
    before = {k: v.detach().clone() for k, v in learner.model.named_parameters()}
    adapted = learner.adapt(FixedTask(0), torch.Generator())
    for k, v in before.items():
        if k in HEAD:
            assert (adapted[k] - v).abs().max() > 1e-6
        else:
            torch.testing.assert_close(adapted[k], v, rtol=0, atol=0)
    head, rest = partition(learner.model, learner.adapt_filter)
    assert sorted(head) == sorted(HEAD) and len(rest) == 4


def test_anil_is_registered_with_a_typed_config():
    info = method_info("anil")
    assert info.cls is ANIL and not info.uses_warps
    assert make_config("anil", {"head": "layers.3"}).head == "layers.3"
    with pytest.raises(ValueError, match="anil has: first_order, meta_optimizer, meta_lr, batched, horizon, head"):
        make_config("anil", {"heads": "x"})
