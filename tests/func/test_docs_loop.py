"""The custom loop in docs/func.md reaches exactly the weights of NNHandler.train."""

import pathlib
import re

import torch

from nnh import NNHandler

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "func.md"


def _first_python_block(text: str) -> str:
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def test_docs_loop_is_short_and_matches_handler_train():
    code = _first_python_block(DOC.read_text())
    assert len([line for line in code.splitlines() if line.strip()]) < 30
    ns: dict = {"__name__": "docs_func_loop"}
    exec(compile(code, str(DOC), "exec"), ns)

    torch.manual_seed(0)
    data = ns["TensorDataset"](torch.randn(512, 20), torch.randint(0, 3, (512,)))
    handler = NNHandler(ns["MLP"])
    handler.set_optimizer(torch.optim.AdamW, lr=1e-3)
    handler.set_loss_fn(torch.nn.functional.cross_entropy)
    handler.set_train_loader(data, batch_size=64, shuffle=True)
    handler.train(3, validate_every=0, gradient_clipping_norm=1.0, ema_decay=0.99, progress_bar=False)

    for (name, a), b in zip(ns["model"].state_dict().items(), handler.module.state_dict().values()):
        assert torch.equal(a, b), name
    for name in ns["state"]["ema"].keys():
        assert torch.equal(ns["state"]["ema", name], handler.train_state["ema", name]), name
    assert not torch.equal(ns["state"]["ema", "net.0.weight"], ns["model"].net[0].weight)
