"""SOSP-H (Nonnenmacher et al. 2022): first-order term plus ½θ_sᵀ(Hθ) from one Hessian-vector
product over the full weight vector."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.func import functional_call

from edgeprune.criteria.sosp import SOSPH, gradient_and_hvp, per_channel_dot
from tests.criteria.toys import TwoConv, context, image_batches, randomise_bn


def setup():
    torch.manual_seed(0)
    model = randomise_bn(TwoConv(c1=3, c2=4)).double()
    batches = tuple((x.double(), y) for x, y in image_batches(2, 5, (1, 6, 6), 3))
    return model, context(model, batches)


def mean_gradient(model, batches) -> dict[str, torch.Tensor]:
    model.eval()
    model.zero_grad(set_to_none=True)
    for x, y in batches:
        (F.cross_entropy(model(x), y) / len(batches)).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def test_hvp_term_matches_finite_differences():
    model, ctx = setup()
    eps = 1e-4
    shifted = {}
    for sign in (1, -1):
        probe = copy.deepcopy(model)
        with torch.no_grad():
            for p in probe.parameters():
                p.mul_(1 + sign * eps)  # θ ± εθ
        shifted[sign] = mean_gradient(probe, ctx.batches)
    hv_fd = {n: (shifted[1][n] - shifted[-1][n]) / (2 * eps) for n in shifted[1]}
    theta = {n: p.detach() for n, p in model.named_parameters()}
    terms = SOSPH().terms(ctx)
    for group in ("conv1", "conv2"):
        first, second = terms[group]
        assert torch.allclose(second, 0.5 * per_channel_dot(ctx, group, theta, hv_fd), rtol=1e-5, atol=1e-9)
        assert torch.allclose(first, per_channel_dot(ctx, group, theta, mean_gradient(model, ctx.batches)),
                              rtol=1e-8, atol=1e-12)
        assert second.abs().max() > 1e-6  # not vacuous
    scores = SOSPH()(ctx)
    first, second = terms["conv2"]
    assert torch.allclose(scores["conv2"].double(), (-first + second).abs(), rtol=1e-6)


def test_gauss_newton_product_matches_explicit_jacobians():
    model, ctx = setup()
    names = [n for n, _ in model.named_parameters()]
    theta = {n: p.detach() for n, p in model.named_parameters()}
    flat = torch.cat([theta[n].flatten() for n in names])
    sizes = [theta[n].numel() for n in names]
    expected = torch.zeros_like(flat)
    model.eval()
    for x, y in ctx.batches:
        def outputs(vector, x=x):
            params = {n: t.view_as(theta[n]) for n, t in zip(names, torch.split(vector, sizes))}
            return functional_call(model, params, (x,)).flatten()
        jac = torch.autograd.functional.jacobian(outputs, flat)  # (N·K, P)
        logits = outputs(flat).detach()
        hess = torch.autograd.functional.hessian(lambda o, y=y: F.cross_entropy(o.view(len(y), -1), y), logits)
        expected += jac.T @ (hess @ (jac @ flat)) / len(ctx.batches)
    _, gn = gradient_and_hvp(ctx, "gauss-newton")
    got = torch.cat([gn[n].flatten() for n in names])
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-10)
