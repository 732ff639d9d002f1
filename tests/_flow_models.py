"""Exact flow fields of Gaussian data N(MU, S2 I) along an nnh interpolant, for sampler tests.

With x_t = alpha x_1 + sigma x_0, x_0 ~ N(0, I): p_t = N(alpha MU, V I), V = alpha^2 S2 + sigma^2;
the score is -(x - alpha MU) / V, the noise E[x_0 | x] = sigma (x - alpha MU) / V, and the velocity
E[u | x] = alpha' MU + (alpha' alpha S2 + sigma' sigma)(x - alpha MU) / V.
"""

import torch

from nnh.func.flow import expand_t_like_x, get_interpolant

MU = torch.tensor([2.0, -1.0], dtype=torch.float64)
S2 = 0.25


class ExactGaussianField(torch.nn.Module):
    def __init__(self, interpolant="linear", prediction="velocity", mu=MU, s2=S2):
        super().__init__()
        self.interpolant, self.prediction, self.mu, self.s2 = get_interpolant(interpolant), prediction, mu, s2

    def forward(self, x, t, shift=None):
        mu = self.mu if shift is None else self.mu + shift
        te = expand_t_like_x(t, x)
        alpha, d_alpha = self.interpolant.compute_alpha_t(te)
        sigma, d_sigma = self.interpolant.compute_sigma_t(te)
        v = alpha * alpha * self.s2 + sigma * sigma
        r = x - alpha * mu
        if self.prediction == "score":
            return -r / v
        if self.prediction == "noise":
            return sigma * r / v
        return d_alpha * mu + (d_alpha * alpha * self.s2 + d_sigma * sigma) / v * r
