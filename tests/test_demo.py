import pathlib
import re

import pytest

from nnh import NNHandler
from nnh._demo import SpiralClassifier, main

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_demo_trains_and_writes_plots_and_checkpoint(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--epochs", "30"]) == 0
    printed = capsys.readouterr().out
    values = dict(re.findall(r"^(\w+): (-?[0-9.]+)$", printed, re.M))
    assert float(values["val_accuracy"]) > 0.9 and float(values["val_loss"]) < 0.4
    assert float(values["mcmc_acceptance"]) > 0.5
    # E|x_i| is 0.868 under the double well; 1000 chains of 400 MALA steps from near 0 get close.
    assert abs(float(values["mcmc_mean_abs_x"]) - 0.868) < 0.05
    # The ring of six N(c, 0.2^2 I) at radius 2: data radii have mean 2.01 and sd 0.2; the 2,000
    # samples (se 0.005) measured 1.98 and 0.198. The trained model's mean log-likelihood of 500
    # fresh data points falls short of the exact -1.45 nats by 0.55 (measured): its error, not
    # the ODE's.
    assert abs(float(values["score_sample_radius_mean"]) - 2.0) < 0.05
    assert abs(float(values["score_sample_radius_std"]) - 0.2) < 0.04
    assert float(values["score_exact_log_likelihood"]) - 1.0 < float(values["score_data_log_likelihood"])
    for name in ("loss.png", "metric_accuracy.png", "mcmc_trajectory.png", "mcmc_samples.png", "score_samples.png",
                 "score_log_likelihood.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    loaded = NNHandler.load(tmp_path / "checkpoint.pth")  # everything in it is importable
    assert isinstance(loaded.module, SpiralClassifier) and loaded.epoch == 30
    assert loaded.val_metrics_history["accuracy"][-1] == pytest.approx(float(values["val_accuracy"]), abs=1e-4)


def test_demo_rejects_zero_epochs():
    with pytest.raises(SystemExit):
        main(["demo", "--epochs", "0"])


def test_readme_quick_start_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    code = re.search(r"## Quick start\n\n```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "__main__"}
    with pytest.warns(UserWarning, match="model_class"):
        exec(compile(code, "README.md", "exec"), ns)
    handler = ns["handler"]
    assert handler.epoch == 5 and len(handler.val_metrics_history["accuracy"]) == 5
    assert (tmp_path / "net.pth").exists()
