import pathlib
import runpy

import pytest
import torch
from torch import nn

from nnh import NNHandler, Sampler
from nnh.stateful.sampler import call_sampler_load

EXAMPLES = pathlib.Path(__file__).parent / "seed_examples"


def test_seed_000_vae_sampler_example_runs(capsys):
    ns = runpy.run_path(str(EXAMPLES / "vae_sampler_000.py"))
    handler = ns["handler"]
    assert ns["generated_samples"].shape == (16, 1, 28, 28)
    assert "Generated 16 samples." in capsys.readouterr().out
    assert isinstance(handler.sampler, ns["MyVAESampler"])
    assert handler.sampler.model is handler.module and handler.sampler.internal_state == 16
    # The samples are the decoder's outputs: sigmoid range, shaped as images.
    assert 0.0 <= float(ns["generated_samples"].min()) and float(ns["generated_samples"].max()) <= 1.0
    assert handler.sampler.init_kwargs == {"model": handler.module, "temperature": 0.7}


def test_seed_001_gaussian_noise_sampler_through_handler_sample():
    ns = runpy.run_path(str(EXAMPLES / "gaussian_sampler_001.py"))
    handler = NNHandler(nn.Linear, in_features=2, out_features=2)
    sampler = ns["GaussianNoiseSampler"](mean=3.0, std=0.5)
    handler.set_sampler(sampler)
    torch.manual_seed(0)
    samples = handler.sample(N=16)
    assert samples.shape == (16, 3, 32, 32)
    # 16*3*32*32 = 49152 draws: the mean's standard error is 0.5 / sqrt(49152) ~ 0.0023.
    assert float(samples.mean()) == pytest.approx(3.0, abs=5 * 0.5 / 49152**0.5)
    assert float(samples.std()) == pytest.approx(0.5, rel=0.02)
    same = handler.get_samples(4)
    assert same.shape == (4, 3, 32, 32) and same.device == handler.device


def test_both_load_spellings_are_called_correctly():
    ns = runpy.run_path(str(EXAMPLES / "gaussian_sampler_001.py"))
    kwargs_style = ns["GaussianNoiseSampler"]()
    assert call_sampler_load(kwargs_style, {"mean": 2.0, "std": 3.0}) is kwargs_style
    assert (kwargs_style.mean, kwargs_style.std) == (2.0, 3.0)
    vae = runpy.run_path(str(EXAMPLES / "vae_sampler_000.py"))
    positional = vae["MyVAESampler"](model=nn.Linear(1, 1))
    call_sampler_load(positional, {"temperature": 0.3, "internal_state": 9})
    assert (positional.temperature, positional.internal_state) == (0.3, 9)


class Counter(Sampler):
    def __init__(self, scale=1.0):
        self.scale = scale

    def sample(self, N, device, **kwargs):
        return torch.full((N,), self.scale, device=device)

    def save(self):
        return {"scale": self.scale}

    def load(self, state_dict):
        self.scale = state_dict["scale"]


def test_set_sampler_by_class_property_and_errors():
    h = NNHandler(nn.Linear, in_features=1, out_features=1)
    with pytest.raises(RuntimeError, match="set_sampler"):
        h.get_samples(2)
    h.set_sampler(Counter, scale=2.5)
    assert torch.equal(h.get_samples(3), torch.full((3,), 2.5))
    assert h.sampler.init_kwargs == {"scale": 2.5}
    h.sampler = Counter(scale=1.0)
    assert float(h.sample(N=2)[0]) == 1.0
    with pytest.raises(ValueError, match="N=0"):
        h.get_samples(0)
    with pytest.raises(TypeError, match="nnh.Sampler"):
        h.set_sampler(object)
    with pytest.raises(TypeError, match="Sampler instance"):
        h.sampler = "not a sampler"
    with pytest.raises(TypeError):
        Sampler()  # abstract


def test_custom_sampler_docs_example_runs():
    import re

    doc = (EXAMPLES.parents[2] / "docs" / "samplers.md").read_text()
    section = doc[doc.index("## Custom samplers"):doc.index("## MCMC samplers for energy-based models")]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    ns: dict = {}
    exec(compile(code, "docs/samplers.md", "exec"), ns)
    assert ns["more"].shape == (4, 16) and ns["handler"].sampler.drawn == 4
    assert ns["handler"].sampler.model is ns["handler"].module
