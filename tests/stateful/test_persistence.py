"""NNHandler.save / load / initialize_from_checkpoint / load_model_code."""

from __future__ import annotations

import inspect
import warnings
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

import nnh
from nnh import NNHandler
from nnh.func.checkpoint import CHECKSUM_KEY, FORMAT_VERSION, CheckpointError, add_checksum, atomic_save
from tests._models import (
    CHILD_ENV,
    MLP,
    Activated,
    CountingCallback,
    KwargsShiftSampler,
    ShiftSampler,
    ToySDE,
    accuracy,
    build_handler,
    scaled_cross_entropy,
    set_loaders,
)

# Some of these tests start child processes: a hang fails in two minutes, not at CI's limit.
pytestmark = pytest.mark.timeout(120)

QUIET = dict(progress_bar=False)


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def assert_same_optimizer_state(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for i in sa["state"]:
        assert_same_tensors(sa["state"][i], sb["state"][i])


# ---------------------------------------------------------------------------- exact resume
@pytest.mark.parametrize("scheduler", ["step", "linear"])
def test_resume_is_bitwise_exact(tmp_path, scheduler):
    # Shuffling loader, dropout, BatchNorm, EMA, a scheduler and bf16 autocast: every source of
    # state or randomness that a resume has to carry over.
    kw = dict(use_amp=True, ema_decay=0.9, **QUIET)
    straight = build_handler(scheduler)
    straight.train(4, seed=3, **kw)

    first = build_handler(scheduler)
    first.train(2, seed=3, **kw)
    first.save(tmp_path / "half.pth")
    resumed = NNHandler.load(tmp_path / "half.pth")
    set_loaders(resumed)  # loaders are not part of a checkpoint
    assert resumed.epoch == 2
    resumed.train(2, **kw)  # no seed: reseeding would restart the random streams

    assert_same_tensors(straight.module.state_dict(), resumed.module.state_dict())
    assert_same_tensors(dict(straight.train_state["ema"].items()), dict(resumed.train_state["ema"].items()))
    assert_same_optimizer_state(straight.optimizer, resumed.optimizer)
    assert straight.scheduler.state_dict() == resumed.scheduler.state_dict()
    assert int(straight.train_state["step"]) == int(resumed.train_state["step"]) == 4 * 6
    assert straight.train_losses == resumed.train_losses
    assert straight.val_losses == resumed.val_losses
    assert straight.train_metrics_history == resumed.train_metrics_history
    assert straight.val_metrics_history == resumed.val_metrics_history
    assert resumed.epoch == 4
    # The resume is not trivially exact: training past the checkpoint changed the weights.
    assert not torch.equal(first.module.net[0].weight, resumed.module.net[0].weight)


RESUME_KW = dict(use_amp=True, ema_decay=0.9, **QUIET)


def straight_and_loaded_half(tmp_path):
    """A 4-epoch run, and a handler loaded from the checkpoint of a 2-epoch run (loaders set)."""
    straight = build_handler()
    straight.train(4, seed=3, **RESUME_KW)
    first = build_handler()
    first.train(2, seed=3, **RESUME_KW)
    first.save(tmp_path / "half.pth")
    resumed = NNHandler.load(tmp_path / "half.pth")
    set_loaders(resumed)
    return straight, resumed


def test_resume_without_rng_state_would_differ(tmp_path):
    # Guards the test above: reseeding the resumed run (losing the saved RNG state) changes the
    # shuffle order and dropout masks, so the exact match depends on the restored RNG.
    straight, resumed = straight_and_loaded_half(tmp_path)
    resumed.seed = 3  # an explicit reseed does restart the streams
    resumed.train(2, **RESUME_KW)
    assert not torch.equal(straight.module.net[0].weight, resumed.module.net[0].weight)


def test_passing_the_same_seed_again_to_a_resumed_run_keeps_it_exact(tmp_path):
    # A requeued job script passes seed= on every start: the resumed run must not reseed.
    straight, resumed = straight_and_loaded_half(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same seed: no warning either
        resumed.train(2, seed=3, **RESUME_KW)
    assert_same_tensors(straight.module.state_dict(), resumed.module.state_dict())
    again = NNHandler.load(tmp_path / "half.pth")
    set_loaders(again)
    with pytest.warns(UserWarning, match="seed=4 ignored"):
        again.train(2, seed=4, **RESUME_KW)
    assert_same_tensors(straight.module.state_dict(), again.module.state_dict())


# ---------------------------------------------------------------------------- file contents
def test_checkpoint_is_plain_data_with_version_records(tmp_path):
    h = build_handler()
    h.train(1, **QUIET)
    h.save(tmp_path / "c.pth")
    ckpt = torch.load(tmp_path / "c.pth", weights_only=True)  # tensors and plain values only
    assert ckpt["format"] == "nnh-checkpoint"
    assert ckpt["format_version"] == FORMAT_VERSION
    assert ckpt["nnh_version"] == nnh.__version__
    assert ckpt["torch_version"] == torch.__version__
    assert ckpt["model"]["class"] == {"__nnh__": "import", "path": "tests._models:MLP"}
    assert ckpt["optimizer"]["class"] == {"__nnh__": "import", "path": "torch.optim.adamw:AdamW"}
    assert ckpt["loss"]["fn"]["path"] == "torch.nn.functional:cross_entropy"
    assert ckpt["epoch"] == 1
    assert_same_tensors(ckpt["model_state_dict"], h.module.state_dict())
    assert set(ckpt["rng"]) == {"torch", "cuda", "python", "numpy"}
    assert ckpt["history"]["train_losses"] == h.train_losses


def test_save_leaves_no_temporary_file_and_honours_umask(tmp_path):
    h = build_handler()
    h.save(tmp_path / "c.pth")
    h.save(tmp_path / "c.pth")  # replacing an existing file
    assert os.listdir(tmp_path) == ["c.pth"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(tmp_path / "c.pth").st_mode & 0o777 == 0o666 & ~umask


_KILLED_SAVE = """
import os, sys, time, torch
from nnh import NNHandler
from tests._models import build_handler

h = build_handler()
h.train(1, progress_bar=False)
h.save("ckpt.pth")
torch.save(h.module.state_dict(), "weights_epoch1.pt")
h.train(1, progress_bar=False)

def stuck_fsync(fd):
    # The new checkpoint's bytes are written to the temporary file; hang before the rename.
    open("in_fsync", "w").close()
    time.sleep(60)

os.fsync = stuck_fsync
h.save("ckpt.pth")
print("save returned", flush=True)
"""


def test_save_killed_midway_leaves_previous_checkpoint(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(_KILLED_SAVE)
    child = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=CHILD_ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "in_fsync").exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never reached the second save"
            time.sleep(0.02)
        temps = [f for f in os.listdir(tmp_path) if f.startswith(".ckpt.pth.") and f.endswith(".tmp")]
        assert len(temps) == 1 and os.path.getsize(tmp_path / temps[0]) > 0
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        out, _ = child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert b"save returned" not in out

    loaded = NNHandler.load(tmp_path / "ckpt.pth")
    assert loaded.epoch == 1
    assert_same_tensors(loaded.module.state_dict(), torch.load(tmp_path / "weights_epoch1.pt", weights_only=True))


# ---------------------------------------------------------------------------- refused files
class Payload:
    """An arbitrary object: unpickling it could run code, so nnh must refuse it."""


def test_pickled_payload_is_refused(tmp_path):
    h = build_handler()
    h.save(tmp_path / "good.pth")
    ckpt = torch.load(tmp_path / "good.pth", weights_only=True)
    ckpt["extra"] = Payload()
    torch.save(ckpt, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="pickled payload") as err:
        NNHandler.load(tmp_path / "evil.pth")
    assert str(tmp_path / "evil.pth") in str(err.value)
    with pytest.raises(CheckpointError, match="pickled payload"):
        NNHandler.initialize_from_checkpoint(tmp_path / "evil.pth", MLP)
    with pytest.raises(CheckpointError, match="pickled payload"):
        nnh.load_model_code(tmp_path / "evil.pth")


def test_truncated_empty_and_foreign_files_name_the_path(tmp_path):
    h = build_handler()
    h.save(tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "half.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "random.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "not a torch file")
    cases = {"half.pth": "truncated", "empty.pth": "empty", "random.pth": "not a torch checkpoint",
             "other.zip": "truncated or corrupt", "missing.pth": "does not exist"}
    for name, words in cases.items():
        with pytest.raises(CheckpointError, match=words) as err:
            NNHandler.load(tmp_path / name)
        assert repr(str(tmp_path / name)) in str(err.value), name


# ---------------------------------------------------------------------------- corrupt files
def _flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def _load_or_checkpoint_error(path) -> NNHandler | None:
    """The handler loaded from `path`, or None when the load raised a CheckpointError naming
    it; any other exception fails the test."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return NNHandler.load(path)
    except CheckpointError as exc:
        assert repr(str(path)) in str(exc)
        return None


def _trained_and_saved(tmp_path) -> tuple[NNHandler, bytes]:
    """A handler after one epoch, saved to tmp_path/good.pth, and the file's bytes."""
    h = build_handler()
    h.train(1, **QUIET)
    h.save(tmp_path / "good.pth")
    return h, (tmp_path / "good.pth").read_bytes()


def test_single_byte_flips_never_load_changed_weights(tmp_path):
    # Before the checksum, a flip in a weight loaded silently and others raised a bare
    # UnicodeDecodeError or OverflowError. Every 41st byte of the ~30 KB file.
    h, data = _trained_and_saved(tmp_path)
    weights, opt = h.module.state_dict(), h.optimizer
    positions = range(len(data) // 41 % 41, len(data), 41)
    loaded = 0
    for at in positions:
        path = tmp_path / "bad.pth"
        path.write_bytes(_flipped(data, at))
        got = _load_or_checkpoint_error(path)
        if got is not None:  # a byte nothing reads (zip padding, a stored CRC): equal state
            loaded += 1
            assert_same_tensors(got.module.state_dict(), weights)
            assert_same_optimizer_state(got.optimizer, opt)
    assert len(positions) > 500 and loaded < len(positions) // 4


def _record_offsets(path) -> dict[str, tuple[int, int]]:
    """{name: (offset of its data, size)} of every record of the zip file at `path`."""
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        out = {}
        for info in z.infolist():
            f.seek(info.header_offset + 26)
            name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
            out[info.filename] = (info.header_offset + 30 + name_len + extra_len, info.file_size)
        return out


def test_a_flip_in_any_tensor_is_refused_naming_the_file(tmp_path):
    _, data = _trained_and_saved(tmp_path)
    records = {n: r for n, r in _record_offsets(tmp_path / "good.pth").items() if "/data/" in n and r[1]}
    assert len(records) > 10  # weights, Adam moments, steps, RNG states...
    for name, (start, size) in records.items():
        for at in (start, start + size // 2, start + size - 1):
            (tmp_path / "bad.pth").write_bytes(_flipped(data, at))
            with pytest.raises(CheckpointError, match="corrupt.*tensor") as err:
                NNHandler.load(tmp_path / "bad.pth")
            assert repr(str(tmp_path / "bad.pth")) in str(err.value), name
    with pytest.raises(CheckpointError, match="corrupt"):
        NNHandler.initialize_from_checkpoint(tmp_path / "bad.pth", MLP)
    with pytest.raises(CheckpointError, match="corrupt"):
        nnh.load_model_code(tmp_path / "bad.pth")


def test_a_changed_plain_value_or_a_missing_checksum_is_refused(tmp_path):
    build_handler().save(tmp_path / "c.pth")
    ckpt = torch.load(tmp_path / "c.pth", weights_only=True)
    ckpt["epoch"] = 7  # what a flipped byte in the pickled integer does
    torch.save(ckpt, tmp_path / "edited.pth")
    with pytest.raises(CheckpointError, match="edited.pth.*corrupt.*plain values"):
        NNHandler.load(tmp_path / "edited.pth")
    del ckpt[CHECKSUM_KEY]
    torch.save(ckpt, tmp_path / "unsealed.pth")
    with pytest.raises(CheckpointError, match="unsealed.pth.*corrupt.*checksum record is missing"):
        NNHandler.load(tmp_path / "unsealed.pth")


def test_a_format_1_file_without_checksum_still_loads(tmp_path):
    h = build_handler()
    h.train(1, **QUIET)
    h.save(tmp_path / "c.pth")
    old = torch.load(tmp_path / "c.pth", weights_only=True)
    del old[CHECKSUM_KEY]
    old["format_version"] = 1
    torch.save(old, tmp_path / "v1.pth")
    loaded = NNHandler.load(tmp_path / "v1.pth")
    assert loaded.epoch == 1
    assert_same_tensors(loaded.module.state_dict(), h.module.state_dict())
    assert_same_optimizer_state(loaded.optimizer, h.optimizer)
    assert nnh.load_model_code(tmp_path / "v1.pth") is None


class _OpaqueState:
    pass


class _Tagged(nn.Linear):
    """A layer with extra state: whatever `tag` holds."""

    tag: object = None

    def get_extra_state(self):
        return self.tag

    def set_extra_state(self, state):
        self.tag = state


class _WithTaggedLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(_Tagged(6, 3))

    def forward(self, x):
        return self.block(x)


def test_extra_state_a_load_would_refuse_is_refused_at_save(tmp_path):
    h = NNHandler(_WithTaggedLayer)
    h.module.block[0].tag = {"scale": 2.0, "steps": torch.arange(3)}
    h.save(tmp_path / "c.pth")  # plain extra state: saves and loads
    assert NNHandler.load(tmp_path / "c.pth").module.block[0].tag["scale"] == 2.0
    before = (tmp_path / "c.pth").read_bytes()
    h.module.block[0].tag = {"scale": _OpaqueState()}
    with pytest.raises(TypeError, match=r"module 'block\.0' \(_Tagged\).*_OpaqueState.*get_extra_state"):
        h.save(tmp_path / "c.pth")
    assert (tmp_path / "c.pth").read_bytes() == before and os.listdir(tmp_path) == ["c.pth"]


def test_save_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    h = build_handler()
    h.save(tmp_path / "c.pth")
    os.chmod(tmp_path / "c.pth", 0o640)
    old = os.umask(0o022)
    try:
        h.save(tmp_path / "c.pth")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "c.pth").st_mode & 0o777 == 0o640


def test_load_of_a_directory_says_it_is_one(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory") as err:
        NNHandler.load(tmp_path)
    assert repr(str(tmp_path)) in str(err.value)
    with pytest.raises(CheckpointError, match="is a directory"):
        NNHandler.initialize_from_checkpoint(tmp_path, MLP)


@pytest.mark.parametrize("keyword, value, words", [
    ("metrics", 5, r"metrics= takes a dict \{name: value\}.*got int 5"),
    ("metrics", {"acc": 5}, r"metrics=\{'acc': \.\.\.\} takes a metric function.*got int 5"),
    ("callbacks", 5, r"callbacks= takes a list of callbacks.*got int 5"),
    ("model_kwargs", [1], r"model_kwargs= takes a dict.*got list \[1\]"),
])
def test_load_keywords_of_the_wrong_type_name_the_keyword(tmp_path, keyword, value, words):
    build_handler().save(tmp_path / "c.pth")
    with pytest.raises(TypeError, match=words):
        NNHandler.load(tmp_path / "c.pth", **{keyword: value})
    assert NNHandler.load(tmp_path / "c.pth", **{keyword: None}).metrics.keys() == {"acc"}  # None: the saved one


def test_plain_state_dict_is_not_a_handler_checkpoint(tmp_path):
    torch.save(MLP().state_dict(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="initialize_from_checkpoint"):
        NNHandler.load(tmp_path / "w.pt")


def test_newer_format_version_is_refused(tmp_path):
    build_handler().save(tmp_path / "c.pth")
    ckpt = torch.load(tmp_path / "c.pth", weights_only=True)
    ckpt["format_version"] = FORMAT_VERSION + 1
    ckpt["nnh_version"] = "9.0.0"
    atomic_save(add_checksum(ckpt), tmp_path / "future.pth")  # as a newer nnh would seal it
    with pytest.raises(CheckpointError, match=rf"format {FORMAT_VERSION + 1}.*9\.0\.0.*Upgrade nnh"):
        NNHandler.load(tmp_path / "future.pth")


def test_unknown_load_keyword_is_a_type_error(tmp_path):
    build_handler().save(tmp_path / "c.pth")
    with pytest.raises(TypeError, match="loss_function"):
        NNHandler.load(tmp_path / "c.pth", loss_function=nn.functional.mse_loss)


# ---------------------------------------------------------------------------- objects passed in at load
def test_lambda_loss_saves_with_warning_and_loads_when_passed(tmp_path):
    h = build_handler()
    h.set_loss_fn(lambda out, y: nn.functional.cross_entropy(out, y))
    h.train(1, **QUIET)
    with pytest.warns(UserWarning, match=r"loss_fn \(.*<lambda>\).*loss_fn=\.\.\."):
        h.save(tmp_path / "c.pth")

    with pytest.raises(CheckpointError, match=r"loss_fn \(.*<lambda>\).*NNHandler.load\(path, loss_fn=\.\.\.\)"):
        NNHandler.load(tmp_path / "c.pth")

    def my_loss(out, y):
        return 2.0 * nn.functional.cross_entropy(out, y)

    loaded = NNHandler.load(tmp_path / "c.pth", loss_fn=my_loss)
    assert loaded.loss_fn is my_loss
    assert_same_tensors(loaded.module.state_dict(), h.module.state_dict())


def test_local_model_class_needs_model_class_at_load(tmp_path):
    class LocalNet(nn.Module):
        def __init__(self, width: int = 4) -> None:
            super().__init__()
            self.lin = nn.Linear(6, width)

        def forward(self, x):
            return self.lin(x)

    torch.manual_seed(0)
    h = NNHandler(LocalNet, width=5)
    with pytest.warns(UserWarning, match=r"model_class \(.*LocalNet\)"):
        h.save(tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match=r"model_class=\.\.\."):
        NNHandler.load(tmp_path / "c.pth")
    loaded = NNHandler.load(tmp_path / "c.pth", model_class=LocalNet)
    assert isinstance(loaded.module, LocalNet) and loaded.module.lin.out_features == 5
    assert_same_tensors(loaded.module.state_dict(), h.module.state_dict())


def test_unsaveable_model_kwarg_is_passed_through_model_kwargs(tmp_path):
    h = NNHandler(Activated, activation=lambda t: t.clamp(min=0))
    with pytest.warns(UserWarning, match=r"model_kwargs\.activation"):
        h.save(tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match=r"model_kwargs=\{'activation': \.\.\.\}"):
        NNHandler.load(tmp_path / "c.pth")
    loaded = NNHandler.load(tmp_path / "c.pth", model_kwargs={"activation": torch.relu})
    assert loaded.module.activation is torch.relu


def test_local_optimizer_class_is_reported_before_use(tmp_path):
    class MySGD(torch.optim.SGD):
        pass

    h = build_handler(scheduler=None)
    h.set_optimizer(MySGD, lr=0.1, momentum=0.9)
    h.train(1, **QUIET)
    with pytest.warns(UserWarning, match="optimizer_class"):
        h.save(tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match=r"optimizer_class=\.\.\."):
        NNHandler.load(tmp_path / "c.pth")
    loaded = NNHandler.load(tmp_path / "c.pth", optimizer_class=MySGD)
    assert type(loaded.optimizer) is MySGD
    assert_same_optimizer_state(loaded.optimizer, h.optimizer)


def test_numpy_and_enum_values_round_trip(tmp_path):
    # NumPy scalars would be pickled by class and then refused by a weights_only load.
    h = build_handler()
    h.set_loss_fn(scaled_cross_entropy, scale=np.float64(0.5))
    h.save(tmp_path / "c.pth")
    loaded = NNHandler.load(tmp_path / "c.pth")
    assert loaded.loss_fn_kwargs == {"scale": 0.5} and type(loaded.loss_fn_kwargs["scale"]) is float


# ---------------------------------------------------------------------------- weights that do not fit
def test_strict_load_false_warns_listing_missing_and_unexpected_keys(tmp_path):
    class WithHead(MLP):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.head = nn.Linear(3, 2)

    h = NNHandler(WithHead)
    with pytest.warns(UserWarning):
        h.save(tmp_path / "with_head.pth")
    with pytest.warns(UserWarning, match=r"unexpected keys \['head\.bias', 'head\.weight'\]"):
        loaded = NNHandler.load(tmp_path / "with_head.pth", model_class=MLP)
    assert_same_tensors(loaded.module.net.state_dict(), h.module.net.state_dict())

    build_handler().save(tmp_path / "plain.pth")
    with pytest.warns(UserWarning, match=r"missing keys \['head\.bias', 'head\.weight'\]"):
        NNHandler.load(tmp_path / "plain.pth", model_class=WithHead, skip_optimizer=True)
    with pytest.raises(CheckpointError, match=r"missing keys \['head\.bias', 'head\.weight'\]"):
        NNHandler.load(tmp_path / "plain.pth", model_class=WithHead, strict_load=True)
    # The optimizer state is matched to parameters by position: it cannot follow other keys.
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="skip_optimizer=True"):
        NNHandler.load(tmp_path / "plain.pth", model_class=WithHead)


def test_weights_of_another_shape_or_model_raise(tmp_path):
    build_handler().save(tmp_path / "c.pth")  # hidden=16
    with pytest.raises(CheckpointError, match=r"net\.0\.weight: checkpoint \(16, 6\) vs model \(8, 6\)") as err:
        NNHandler.load(tmp_path / "c.pth", model_kwargs={"hidden": 8})
    assert "net.4.weight" in str(err.value) and "net.1.running_mean" in str(err.value)

    class Unrelated(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(6, 3)

    # No key in common: even strict_load=False must not silently keep random weights.
    with pytest.raises(CheckpointError, match="None of the weights"):
        NNHandler.load(tmp_path / "c.pth", model_class=Unrelated)


# ---------------------------------------------------------------------------- what a load restores
def _full_handler() -> NNHandler:
    h = build_handler()
    h.add_callback(CountingCallback("first"))
    h.add_callback(CountingCallback("second"))
    h.set_sampler(ShiftSampler, model=h.module, transform=torch.nn.functional.relu)
    h.sampler.shift += 1.5
    h.train(2, ema_decay=0.9, **QUIET)
    h.sde = ToySDE(scale=2.5)  # after training: an SDE makes the handler score-based
    return h


SKIPS = ["skip_optimizer", "skip_scheduler", "skip_history", "skip_callbacks", "skip_sampler_sde", "skip_ema"]


def _parts(h: NNHandler) -> dict[str, bool]:
    return {
        "skip_optimizer": h.optimizer is not None,
        "skip_scheduler": h.scheduler is not None,
        "skip_history": len(h.train_losses) == 2,
        "skip_callbacks": [c.tag for c in h.callbacks] == ["first", "second"],
        "skip_sampler_sde": h.sampler is not None and h.sde is not None,
        "skip_ema": h.train_state is not None and "ema" in h.train_state.keys(),
    }


@pytest.mark.parametrize("skip", [None, *SKIPS])
def test_skip_flags_skip_their_part_only(tmp_path, skip):
    h = _full_handler()
    h.save(tmp_path / "c.pth")
    loaded = NNHandler.load(tmp_path / "c.pth", **({skip: True} if skip else {}))
    expected = {name: name != skip for name in SKIPS}
    if skip == "skip_optimizer":
        expected["skip_scheduler"] = False  # a scheduler needs its optimizer
    assert _parts(loaded) == expected
    assert_same_tensors(loaded.module.state_dict(), h.module.state_dict())
    assert loaded.epoch == 2


def test_load_restores_every_part(tmp_path):
    h = _full_handler()
    h.auto_save(3, save_path=str(tmp_path / "auto"), name="m{epoch}_{val_acc:.2f}", overwrite=True)
    h.set_preemption_checkpoint(tmp_path / "pre.pth")
    h.save(tmp_path / "c.pth")
    loaded = NNHandler.load(tmp_path / "c.pth")

    assert_same_optimizer_state(loaded.optimizer, h.optimizer)
    assert loaded.scheduler.state_dict() == h.scheduler.state_dict()
    assert_same_tensors(dict(loaded.train_state["ema"].items()), dict(h.train_state["ema"].items()))
    assert int(loaded.train_state["step"]) == int(h.train_state["step"])
    assert loaded.metrics == {"acc": accuracy}
    assert loaded.train_metrics_history == h.train_metrics_history
    assert [(c.tag, c.epochs_seen) for c in loaded.callbacks] == [("first", 2), ("second", 2)]
    assert all(c.handler is loaded for c in loaded.callbacks)
    assert isinstance(loaded.sde, ToySDE) and loaded.sde.scale == 2.5
    assert (loaded.save_interval, loaded.save_path, loaded.save_model_name, loaded.overwrite_last_saved) == (
        3, str(tmp_path / "auto"), "m{epoch}_{val_acc:.2f}", True)
    assert loaded.preemption.target(loaded.save_path) == str(tmp_path / "pre.pth")
    assert loaded.epoch == 2 and loaded.model_type is h.model_type


# ---------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("sampler_class", [ShiftSampler, KwargsShiftSampler])
def test_sampler_round_trip_rebinds_module_and_needs_unsaveable_kwargs(tmp_path, sampler_class):
    h = build_handler()
    h.train(1, **QUIET)
    double = lambda t: 2 * t  # noqa: E731
    h.set_sampler(sampler_class, model=h.module, transform=double)
    h.sampler.shift += torch.arange(6.0)
    h.get_samples(4)
    with pytest.warns(UserWarning, match=r"sampler_kwargs\.transform"):
        h.save(tmp_path / "c.pth")

    with pytest.raises(CheckpointError, match=r"sampler_kwargs=\{'transform': \.\.\.\}"):
        NNHandler.load(tmp_path / "c.pth")

    loaded = NNHandler.load(tmp_path / "c.pth", sampler_kwargs={"transform": double})
    s = loaded.sampler
    assert type(s) is sampler_class
    assert s.model is loaded.module  # bound again to the loaded handler's module, not a copy
    assert s.transform is double
    assert torch.equal(s.shift, torch.arange(6.0)) and s.calls == 1  # state restored by load()
    h.eval(log=False)
    loaded.eval(log=False)
    assert torch.equal(loaded.get_samples(3), h.get_samples(3))


def test_sampler_passed_as_instance_replaces_saved_one(tmp_path):
    h = build_handler()
    h.set_sampler(ShiftSampler, model=h.module, transform=torch.relu)
    h.save(tmp_path / "c.pth")
    mine = ShiftSampler(model=nn.Identity(), transform=torch.relu)
    assert NNHandler.load(tmp_path / "c.pth", sampler=mine).sampler is mine


# ---------------------------------------------------------------------------- initialize_from_checkpoint
class Wrapper(nn.Module):
    """A model whose own submodule is called `module`: its keys must not be stripped."""

    def __init__(self) -> None:
        super().__init__()
        self.module = nn.Linear(6, 3)

    def forward(self, x):
        return self.module(x)


def test_initialize_from_checkpoint_reads_every_layout(tmp_path):
    torch.manual_seed(1)
    source = MLP()
    weights = source.state_dict()
    h = build_handler()
    h.train(1, **QUIET)
    h.save(tmp_path / "full.pth")
    torch.save(weights, tmp_path / "plain.pt")
    torch.save({f"module.{k}": v for k, v in weights.items()}, tmp_path / "ddp.pt")
    torch.save(torch.compile(source).state_dict(), tmp_path / "compiled.pt")
    torch.save({f"_orig_mod.module.{k}": v for k, v in weights.items()}, tmp_path / "compiled_ddp.pt")
    torch.save({"state_dict": weights, "epoch": 3}, tmp_path / "nested.pt")
    assert next(iter(torch.load(tmp_path / "compiled.pt", weights_only=True))).startswith("_orig_mod.")

    full = NNHandler.initialize_from_checkpoint(tmp_path / "full.pth", MLP)
    assert_same_tensors(full.module.state_dict(), h.module.state_dict())
    assert full.optimizer is None and full.train_losses == []  # weights only
    for name in ("plain.pt", "ddp.pt", "compiled.pt", "compiled_ddp.pt", "nested.pt"):
        loaded = NNHandler.initialize_from_checkpoint(tmp_path / name, MLP)
        assert_same_tensors(loaded.module.state_dict(), weights)


def test_initialize_from_checkpoint_keeps_a_submodule_named_module(tmp_path):
    torch.manual_seed(2)
    weights = Wrapper().state_dict()  # keys "module.weight", "module.bias"
    torch.save(weights, tmp_path / "plain.pt")
    torch.save({f"module.{k}": v for k, v in weights.items()}, tmp_path / "ddp.pt")
    for name in ("plain.pt", "ddp.pt"):
        loaded = NNHandler.initialize_from_checkpoint(tmp_path / name, Wrapper)
        assert_same_tensors(loaded.module.state_dict(), weights)


def test_initialize_from_checkpoint_strictness(tmp_path):
    weights = MLP().state_dict()
    del weights["net.4.bias"]
    torch.save(weights, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"missing keys \['net\.4\.bias'\]"):
        NNHandler.initialize_from_checkpoint(tmp_path / "partial.pt", MLP)
    with pytest.warns(UserWarning, match=r"missing keys \['net\.4\.bias'\]"):
        NNHandler.initialize_from_checkpoint(tmp_path / "partial.pt", MLP, strict_load=False)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="neither an nnh checkpoint nor a state_dict"):
        NNHandler.initialize_from_checkpoint(tmp_path / "list.pt", MLP)


# ---------------------------------------------------------------------------- model code
def test_save_model_code_stores_the_class_source_as_text(tmp_path):
    h = NNHandler(MLP, save_model_code=True)
    h.save(tmp_path / "code.pth")
    code = nnh.load_model_code(tmp_path / "code.pth")
    assert code == inspect.getsource(MLP)
    assert code.startswith("class MLP(nn.Module):")
    assert NNHandler.load(tmp_path / "code.pth").parts.model.save_code  # kept for the next save

    NNHandler(MLP).save(tmp_path / "nocode.pth")
    assert nnh.load_model_code(tmp_path / "nocode.pth") is None


class _WithNonPersistentBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.register_buffer("scale", torch.full((3,), 2.0), persistent=False)

    def forward(self, x):
        return self.lin(x) * self.scale


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 3, bias=False)
        self.b = nn.Linear(3, 3, bias=False)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(self.a(x))


def test_load_takes_the_files_tensors_without_initialising_the_model(tmp_path, monkeypatch):
    h = build_handler()
    h.train(1, **QUIET)
    h.save(tmp_path / "m.pth")
    inits = []
    real = nn.Linear.reset_parameters

    def recording(self):
        inits.append(self.weight.device.type)
        real(self)

    monkeypatch.setattr(nn.Linear, "reset_parameters", recording)
    loaded = NNHandler.load(tmp_path / "m.pth")
    assert inits and set(inits) == {"meta"}  # built on the meta device only
    assert_same_tensors(loaded.module.state_dict(), h.module.state_dict())
    assert all(p.device.type == "cpu" and p.requires_grad for p in loaded.module.parameters())


@pytest.mark.parametrize("model", [_WithNonPersistentBuffer, _Tied])
def test_models_the_file_does_not_define_completely_load_the_ordinary_way(tmp_path, model):
    torch.manual_seed(0)
    h = NNHandler(model, model_type="regression")
    h.set_optimizer(torch.optim.Adam, lr=1e-2)
    h.set_loss_fn(nn.functional.mse_loss)
    h.set_train_loader(torch.utils.data.TensorDataset(torch.randn(8, 3), torch.randn(8, 3)), batch_size=4)
    h.train(1, validate_every=0, **QUIET)
    h.save(tmp_path / "m.pth")
    loaded = NNHandler.load(tmp_path / "m.pth")
    assert len(list(loaded.module.parameters())) == len(list(h.module.parameters()))
    assert_same_tensors(loaded.module.state_dict(), h.module.state_dict())
    x = torch.randn(2, 3)
    assert torch.equal(loaded.module(x), h.module(x))
    if model is _Tied:
        assert loaded.module.a.weight is loaded.module.b.weight
