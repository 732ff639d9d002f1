"""Every python example of docs/callbacks.md runs, in order, in one namespace."""

import pathlib
import re


DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "callbacks.md"


def test_docs_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 7
    ns: dict = {"__name__": "docs_callbacks"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{DOC}:block{i}", "exec"), ns)
    assert (tmp_path / "logs" / "history.csv").exists() and (tmp_path / "logs" / "run.csv").exists()
    resumed = ns["resumed"]
    assert resumed.epoch == 5 and type(resumed.callbacks[0]).__name__ == "EarlyStopping"
    assert resumed.callbacks[0].patience == 5 and resumed.callbacks[0].handler is resumed
    assert ns["tracker"].best == min(ns["handler"].train_losses)
