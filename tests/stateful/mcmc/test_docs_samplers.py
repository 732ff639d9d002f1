"""Every Python example of the MCMC half of docs/samplers.md runs as written, in order."""

import pathlib
import re

import torch

DOC = pathlib.Path(__file__).resolve().parents[3] / "docs" / "samplers.md"


def test_mcmc_examples_run(tmp_path, monkeypatch):
    text = DOC.read_text()
    mcmc = text[text.index("## MCMC samplers for energy-based models"):]
    blocks = re.findall(r"```python\n(.*?)```", mcmc, flags=re.S)
    assert len(blocks) >= 10
    monkeypatch.chdir(tmp_path)  # the plot examples write PNGs
    torch.manual_seed(0)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    assert (tmp_path / "langevin_trajectory.png").exists() and (tmp_path / "double_well_samples.png").exists()
    assert abs(namespace["ula"].var().item() - 4 / 3) < 0.05 and abs(namespace["mala"].var().item() - 1) < 0.05
    # The values the TorchEBM-parity examples print: Booth's minimum, the precision sliced score
    # matching learns (data std 2 and 0.5), the flow-matching samples (data mean (2, -1), var 0.25).
    torch.testing.assert_close(namespace["minima"], torch.tensor([[1.0, 3.0]]).expand(8, 2), atol=1e-3, rtol=0)
    torch.testing.assert_close(namespace["energy"].log_precision.exp().detach(), torch.tensor([0.25, 4.0]), rtol=0.1, atol=0)
    torch.testing.assert_close(namespace["flowed"].mean(0), torch.tensor([2.0, -1.0]), atol=0.1, rtol=0)
    assert namespace["z"].shape == (100, 5) and torch.isfinite(namespace["z"]).all()
