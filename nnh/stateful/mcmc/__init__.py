"""MCMC samplers, energy models, schedulers and contrastive divergence."""

__all__: list[str] = []
