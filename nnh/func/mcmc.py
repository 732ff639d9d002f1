"""Pure MCMC transition steps (filled in by the MCMC work)."""

__all__: list[str] = []
