"""OML and ANML: meta-gradients against finite differences of hand-written references, gating,
the meta-test protocol and checkpoints. Tiny float64 nets: 4-dim inputs, 3 classes, trajectories
of 3 images."""

import copy

import pytest
import torch
from reference import finite_difference
from torch import nn
from torch.nn import functional as F

from warpgrad.methods.continual.anml import ANML, anml_networks
from warpgrad.methods.continual.oml import OML, conv_representation

LR = 0.5


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    tx = torch.randn(3, 4, generator=g)
    rx = torch.randn(4, 4, generator=g)
    return tx, torch.tensor([1, 1, 1]), rx, torch.tensor([0, 2, 0, 2])


def softmax_ce_grad(z, y):
    """∂CE/∂z for a single example, written by hand."""
    return torch.softmax(z, -1) - F.one_hot(y, z.shape[-1]).to(z.dtype)


# ----------------------------------------------------------------------------- OML


def oml_model(seed=0):
    torch.manual_seed(seed)
    rln = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh())
    head = nn.Linear(5, 3)
    with torch.no_grad():
        head.weight.mul_(3.0)
    return OML(rln, head, inner_lr=LR, meta_lr=1e-2)


def oml_reference(p, tx, ty, rx, ry, lr=LR):
    """OML's meta-loss written out: head gradient in closed form, no autograd in the inner loop."""

    def feat(x):
        return torch.tanh(torch.tanh(x @ p["rln.0.weight"].T + p["rln.0.bias"]) @ p["rln.2.weight"].T + p["rln.2.bias"])

    w, b = p["head.weight"], p["head.bias"]
    for i in range(tx.shape[0]):
        f = feat(tx[i])
        d = softmax_ce_grad(w @ f + b, ty[i])
        w, b = w - lr * torch.outer(d, f), b - lr * d
    x, y = torch.cat([tx, rx]), torch.cat([ty, ry])
    return F.cross_entropy(feat(x) @ w.T + b, y)


def test_oml_meta_gradient_matches_finite_differences(float64):
    oml = oml_model()
    batch = data()
    params = dict(oml.model.named_parameters())
    grads, loss = oml.meta_gradient(*batch)
    assert loss.item() == pytest.approx(oml_reference(params, *batch).item(), abs=1e-12)
    fd = finite_difference(lambda p: oml_reference(p, *batch), params)
    for (name, _), g in zip(oml.model.named_parameters(), grads):
        torch.testing.assert_close(g, fd[name], atol=1e-7, rtol=1e-6, msg=name)
    # the second-order terms matter here: first order gives a different RLN gradient
    oml.first_order = True
    fo, _ = oml.meta_gradient(*batch)
    assert (fo[0] - grads[0]).norm() > 1e-2 * grads[0].norm()


# ----------------------------------------------------------------------------- ANML


def anml_model(seed=0, **kwargs):
    torch.manual_seed(seed)
    nm = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5))
    features = nn.Sequential(nn.Linear(4, 5), nn.Tanh())
    head = nn.Linear(5, 3)
    with torch.no_grad():
        nm[2].weight.mul_(3.0)
        head.weight.mul_(3.0)
    return ANML(nm, features, head, inner_lr=LR, meta_lr=1e-2, **kwargs)


def anml_reference(p, tx, ty, rx, ry, lr=LR, first_order=False):
    """ANML's meta-loss (inner='all') written out; inner gradients by hand (chain rule through tanh)."""

    def mask(x):
        return torch.sigmoid(torch.tanh(x @ p["nm.0.weight"].T + p["nm.0.bias"]) @ p["nm.2.weight"].T + p["nm.2.bias"])

    a, c, w, b = p["features.0.weight"], p["features.0.bias"], p["head.weight"], p["head.bias"]
    for i in range(tx.shape[0]):
        m = mask(tx[i])
        h = torch.tanh(a @ tx[i] + c)
        d = softmax_ce_grad(w @ (h * m) + b, ty[i])
        dpre = (w.T @ d) * m * (1 - h**2)
        grads = [torch.outer(dpre, tx[i]), dpre, torch.outer(d, h * m), d]
        if first_order:
            grads = [g.detach() for g in grads]
        a, c, w, b = (v - lr * g for v, g in zip((a, c, w, b), grads))
    x, y = torch.cat([tx, rx]), torch.cat([ty, ry])
    return F.cross_entropy((torch.tanh(x @ a.T + c) * mask(x)) @ w.T + b, y)


def test_anml_meta_gradient_is_second_order(float64):
    anml = anml_model()
    batch = data(1)
    params = dict(anml.model.named_parameters())
    grads, loss = anml.meta_gradient(*batch)
    grads = dict(zip(params, grads))
    assert loss.item() == pytest.approx(anml_reference(params, *batch).item(), abs=1e-12)
    fd = finite_difference(lambda p: anml_reference(p, *batch), params)
    for name in params:
        torch.testing.assert_close(grads[name], fd[name], atol=1e-7, rtol=1e-6, msg=name)

    # first order (the original code): differs from the true gradient w.r.t. the NM network ...
    fo_anml = anml_model(first_order=True)
    fo, _ = fo_anml.meta_gradient(*batch)
    fo = dict(zip(params, fo))
    nm_true = torch.cat([grads[k].flatten() for k in params if k.startswith("nm.")])
    nm_fo = torch.cat([fo[k].flatten() for k in params if k.startswith("nm.")])
    assert (nm_true - nm_fo).norm() > 0.1 * nm_true.norm()
    # ... and equals the reference with detached inner gradients
    ref = {k: v.detach().requires_grad_() for k, v in params.items()}
    ref_fo = torch.autograd.grad(anml_reference(ref, *batch, first_order=True), list(ref.values()))
    for name, g in zip(params, ref_fo):
        torch.testing.assert_close(fo[name], g, atol=1e-12, rtol=1e-10, msg=name)


def test_anml_head_only_inner_loop_matches_finite_differences(float64):
    anml = anml_model(inner="head")
    batch = data(2)
    params = dict(anml.model.named_parameters())
    grads, _ = anml.meta_gradient(*batch)
    fd = finite_difference(lambda p: _functional_meta_loss(anml, p, batch), params)
    for name, g in zip(params, grads):
        torch.testing.assert_close(g, fd[name], atol=1e-7, rtol=1e-6, msg=name)


def _functional_meta_loss(learner, p, batch):
    saved = copy.deepcopy(learner.model.state_dict())
    with torch.no_grad():
        for name, param in learner.model.named_parameters():
            param.copy_(p[name])
        loss = learner.meta_loss(*batch)
        learner.model.load_state_dict(saved)
    return loss


def test_gating_zero_mask_blocks_feature_gradient(float64):
    anml = anml_model()
    gated = 2
    with torch.no_grad():  # mask logit −1000 for feature 2: σ gives exactly 0 in float64
        anml.nm[2].weight[gated] = 0.0
        anml.nm[2].bias[gated] = -1000.0
    x, y = torch.randn(1, 4), torch.tensor([0])
    mask = anml.mask(x)
    assert mask[0, gated].item() == 0.0 and (mask[0, torch.arange(5) != gated] > 0).all()
    params = {f"features.{k}": v for k, v in anml.feature_net.named_parameters()}
    params.update({f"head.{k}": v for k, v in anml.head.named_parameters()})
    g = anml.inner_gradient(params, x, y, mask)
    # hand check: ∂ℓ/∂W = (p − onehot) (h ⊙ m)ᵀ; ∂ℓ/∂h = Wᵀ(p − onehot) ⊙ m
    h = torch.tanh(x[0] @ anml.feature_net[0].weight.T + anml.feature_net[0].bias)
    d = softmax_ce_grad(anml.head.weight @ (h * mask[0]) + anml.head.bias, y[0])
    torch.testing.assert_close(g["head.weight"], torch.outer(d, h * mask[0]).detach())
    assert (g["head.weight"][:, gated] == 0).all() and (g["head.weight"][:, 0] != 0).all()
    assert (g["features.0.weight"][gated] == 0).all() and g["features.0.bias"][gated] == 0
    assert (g["features.0.weight"][0] != 0).all()


# ----------------------------------------------------------------------------- meta-test


def reference_meta_test(feature_map, stream, lr):
    """One pass, one SGD step per image on a zero-initialised linear head; accuracy on seen classes."""
    w, b = torch.zeros(3, 4), torch.zeros(3)
    curve = []
    for c, xs in enumerate(stream):
        for x in xs:
            f = feature_map(x)
            d = softmax_ce_grad(w @ f + b, torch.tensor(c))
            w, b = w - lr * torch.outer(d, f), b - lr * d
        seen = torch.cat(
            [(torch.stack([feature_map(x) for x in stream[j]]) @ w.T + b).argmax(-1) == j for j in range(c + 1)]
        )
        curve.append(seen.double().mean())
    return torch.stack(curve)


def separable_oml(lr):
    rln = nn.Linear(4, 4)  # frozen RLN: the identity map, so class c ↦ near e_c (linearly separable)
    with torch.no_grad():
        rln.weight.copy_(torch.eye(4))
        rln.bias.zero_()
    return OML(rln, nn.Linear(4, 3), inner_lr=lr)


def test_meta_test_accuracy_on_all_seen_classes(float64):
    g = torch.Generator().manual_seed(0)
    stream = [3 * torch.eye(4)[c] + 0.1 * torch.randn(2, 4, generator=g) for c in range(3)]
    oml = separable_oml(lr=1.0)
    result = oml.meta_test(stream)
    assert [len(a) for a in result["per_class"]] == [1, 2, 3]
    torch.testing.assert_close(result["accuracy"], torch.ones(3, dtype=torch.float64))

    # overlapping classes: class 1 is learned on inputs close to class 0's, so class 0 is forgotten
    stream[1] = stream[0] + 0.05 * torch.eye(4)[1]
    result = oml.meta_test(stream)
    expected = reference_meta_test(lambda x: x, stream, 1.0)
    torch.testing.assert_close(result["accuracy"], expected)
    assert result["accuracy"].tolist() == [1.0, 0.5, 2 / 3]
    torch.testing.assert_close(result["per_class"][1], torch.tensor([0.0, 1.0]))
    # separate evaluation images: accuracy is measured on them, per class
    held_out = oml.meta_test(stream, [xs[:1] for xs in stream])
    torch.testing.assert_close(held_out["per_class"][1], torch.tensor([0.0, 1.0]))
    assert len(held_out["per_class"][2]) == 3
    # the RLN is frozen by the protocol; unknown head resets are refused
    assert (oml.rln.weight == torch.eye(4)).all()
    with pytest.raises(ValueError, match="head reset"):
        oml.meta_test(stream, head_reset="bogus")


def test_meta_step_and_checkpoint_resume(float64):
    for make in (oml_model, anml_model):
        a = make()
        batch = data(3)
        loss0 = a.meta_step(*batch)["meta_loss"]
        state = copy.deepcopy(a.state_dict())
        for _ in range(5):
            last = a.meta_step(*batch)["meta_loss"]
        assert last < loss0
        b = make(seed=7)
        b.load_state_dict(state)
        for _ in range(5):
            b.meta_step(*batch)
        for pa, pb in zip(a.model.parameters(), b.model.parameters()):
            torch.testing.assert_close(pa, pb, atol=0, rtol=0)


def test_default_image_architectures():
    torch.manual_seed(0)
    rln, dim = conv_representation(widths=(4, 4, 4))
    x = torch.randn(3, 1, 28, 28)
    assert rln(x).shape == (3, dim) and dim == 4 * 4 * 4
    nm, features, head = anml_networks(5, nm_widths=(2, 2, 2), pn_widths=(4, 4, 4), norm=True)
    anml = ANML(nm, features, head)
    assert anml.mask(x).shape == features(x).shape
    grads, _ = anml.meta_gradient(x, torch.tensor([1, 1, 1]), x[:2], torch.tensor([0, 2]))
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads[:4])
    assert anml.meta_test([x[:2], x[2:]])["accuracy"].shape == (2,)
