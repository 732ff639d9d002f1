import math

import pytest
import torch
from torch import nn

from nnh.func import hutchinson_divergence, hutchinson_probes


def small_mlp(d: int) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, d))


def test_basis_probes_give_the_exact_jacobian_trace():
    # Probes sqrt(D) e_k, k = 1..D, have E[v v^T] = I and average to the trace exactly.
    d, b = 5, 3
    fn, x = small_mlp(d), torch.randn(b, d)
    probes = (math.sqrt(d) * torch.eye(d))[:, None, :].expand(d, b, d)
    out, div = hutchinson_divergence(fn, x, probes)
    jac = torch.func.vmap(torch.func.jacrev(fn))(x)  # (B, D, D), per sample
    torch.testing.assert_close(div, jac.diagonal(dim1=1, dim2=2).sum(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, fn(x))


@pytest.mark.parametrize("noise_type", ["rademacher", "gaussian"])
def test_spread_matches_the_variance_formula_and_shrinks_as_one_over_sqrt_k(noise_type):
    # fn(x) = A x with a full A: tr A estimated by M independent rows, at K = 1 and K = 16.
    # Rademacher: Var[v^T A v] = sum_{i != j} A_ij (A_ij + A_ji); Gaussian adds 2 sum_i A_ii^2.
    # The sample std of M = 4000 estimates has relative standard error 1/sqrt(2 M) = 1.1 %
    # (nearly Gaussian estimates at K = 16, heavier tails at K = 1): 6 % is > 5 standard errors.
    torch.manual_seed(0)
    d, m = 4, 4000
    a = torch.randn(d, d, dtype=torch.float64)
    var1 = (a * (a + a.T)).sum() - (a.diagonal() * 2 * a.diagonal()).sum()
    if noise_type == "gaussian":
        var1 = var1 + 2 * (a.diagonal() ** 2).sum()
    x = torch.randn(m, d, dtype=torch.float64)
    stds = {}
    for k in (1, 16):
        _, div = hutchinson_divergence(lambda y: y @ a.T, x, hutchinson_probes(x, k, noise_type))
        assert abs(div.mean() - a.trace()) < 5 * math.sqrt(var1 / (k * m))
        stds[k] = div.std()
        assert stds[k].item() == pytest.approx(math.sqrt(var1 / k), rel=0.06)
    assert (stds[1] / stds[16]).item() == pytest.approx(4.0, rel=0.09)


def test_the_divergence_is_differentiable_in_the_parameters_of_fn():
    # What training through it needs (sliced score matching): d div / d theta equals the gradient
    # of the exact trace, here with basis probes (exact) and with Rademacher ones (the mean of the
    # per-probe terms, each differentiated).
    d, b = 4, 5
    fn, x = small_mlp(d), torch.randn(b, d)
    params = list(fn.parameters())[:-1]  # the last bias does not change the Jacobian

    def exact_trace() -> torch.Tensor:
        jac = torch.func.vmap(torch.func.jacrev(fn))(x)
        return jac.diagonal(dim1=1, dim2=2).sum(-1)

    weights = torch.randn(b)  # a generic linear functional of the per-sample divergences
    expected = torch.autograd.grad((weights * exact_trace()).sum(), params)
    basis = (math.sqrt(d) * torch.eye(d))[:, None, :].expand(d, b, d)
    got = torch.autograd.grad((weights * hutchinson_divergence(fn, x, basis)[1]).sum(), params)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    # One Rademacher probe v: d(v^T J v)/d theta, against autograd through the Jacobian.
    v = hutchinson_probes(x, 1, generator=torch.Generator().manual_seed(0))
    jac = torch.func.vmap(torch.func.jacrev(fn))(x)
    expected = torch.autograd.grad((weights * torch.einsum("bi,bij,bj->b", v[0], jac, v[0])).sum(), params)
    got = torch.autograd.grad((weights * hutchinson_divergence(fn, x, v)[1]).sum(), params)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


def test_fn_is_evaluated_once_for_all_probes():
    calls = []
    fn = small_mlp(3)

    def counted(y):
        calls.append(y.shape)
        return fn(y)

    x = torch.randn(6, 3)
    with torch.no_grad():  # the transform tracks x itself
        _, div = hutchinson_divergence(counted, x, hutchinson_probes(x, 7))
    assert calls == [torch.Size([6, 3])] and div.shape == (6,) and torch.isfinite(div).all()


def test_probes_and_shapes_are_checked():
    x = torch.randn(2, 3, 4)
    r = hutchinson_probes(x, 5, "Rademacher", generator=torch.Generator().manual_seed(0))
    assert r.shape == (5, 2, 3, 4) and set(r.unique().tolist()) == {-1.0, 1.0}
    with pytest.raises(ValueError, match="noise_type='uniform' must be 'rademacher' or 'gaussian'"):
        hutchinson_probes(x, 1, "uniform")
    with pytest.raises(ValueError, match=r"n=0 must be an int >= 1"):
        hutchinson_probes(x, 0)
    with pytest.raises(ValueError, match=r"noise of shape \(2, 3, 4\) does not fit x of shape \(2, 3, 4\)"):
        hutchinson_divergence(lambda y: y, x, x)
    with pytest.raises(ValueError, match="output shaped like its input"):
        hutchinson_divergence(lambda y: y.sum(-1), x, r)


def test_hutchinson_divergence_compiles_fullgraph():
    fn, x = small_mlp(3), torch.randn(4, 3)
    noise = hutchinson_probes(x, 2, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(lambda y, v: hutchinson_divergence(fn, y, v), fullgraph=True)
    with torch.no_grad():
        for a, b in zip(compiled(x, noise), hutchinson_divergence(fn, x, noise)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_noise_of_the_wrong_event_shape_or_no_probes_is_refused():
    x = torch.randn(2, 3, 4)
    for shape in ((5, 2, 3, 5), (5, 2, 4, 3), (5, 1, 3, 4), (0, 2, 3, 4)):
        with pytest.raises(ValueError, match=rf"noise of shape \({', '.join(map(str, shape))}\) does not fit"):
            hutchinson_divergence(lambda y: y, x, torch.zeros(shape))


@pytest.mark.parametrize("noise_type", ["rademacher", "gaussian"])
def test_probes_come_from_the_generator_alone(noise_type):
    # The same seed gives the same probes, and the global RNG is neither read nor advanced.
    x = torch.zeros(3, 4, dtype=torch.float64)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = hutchinson_probes(x, 8, noise_type, torch.Generator().manual_seed(1))
    torch.manual_seed(123)  # a different global state must not change the draw
    b = hutchinson_probes(x, 8, noise_type, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.manual_seed(0)
    hutchinson_probes(x, 8, noise_type, torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state)
    assert a.dtype == torch.float64 and a.shape == (8, 3, 4)


@pytest.mark.parametrize("n", [True, 2.0])
def test_the_number_of_probes_must_be_an_int(n):
    with pytest.raises(ValueError, match=rf"n={n!r} must be an int >= 1"):
        hutchinson_probes(torch.zeros(2, 3), n)


def test_a_noise_type_that_is_not_a_string_is_refused():
    with pytest.raises(ValueError, match="noise_type=None must be 'rademacher' or 'gaussian'"):
        hutchinson_probes(torch.zeros(2, 3), 1, None)
