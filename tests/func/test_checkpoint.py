"""nnh.func.checkpoint: atomic writes, safe reads, objects as import paths."""

from __future__ import annotations

import enum
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from nnh.func import (
    CheckpointError,
    Unrecorded,
    atomic_save,
    decode_value,
    encode_value,
    find_unrecorded,
    import_object,
    import_path,
    load_state_from_dict,
    read_checkpoint,
    state_to_dict,
)
from nnh._init_record import RecordsInit, recorded_init
from nnh.func.checkpoint import atomic_write
from nnh.func.checksum import (
    CHECKSUM_KEY,
    Unstorable,
    _blocksum_numpy,
    _blocksum_torch,
    _raw_bytes,
    add_checksum,
    tensor_checksum,
    verify_checksum,
)
from nnh.stateful.enums import ModelType
from tests._models import CHILD_ENV, CountingCallback

# Some of these tests start child processes: a hang fails in two minutes, not at CI's limit.
pytestmark = pytest.mark.timeout(120)



# ---------------------------------------------------------------------------- atomic_save
def test_atomic_save_round_trip_and_replace(tmp_path):
    path = tmp_path / "sub" / "c.pth"  # the folder is created
    atomic_save({"a": torch.arange(3), "b": [1, "x", None]}, path)
    atomic_save({"a": torch.arange(5)}, path)
    got = read_checkpoint(path)
    assert got.keys() == {"a"} and torch.equal(got["a"], torch.arange(5))
    assert os.listdir(path.parent) == ["c.pth"]


def test_atomic_save_file_mode_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_save({"a": 1}, tmp_path / "c.pth")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "c.pth").st_mode & 0o777 == 0o640  # what open(path, "wb") gives


def test_failed_save_keeps_the_previous_file_and_removes_the_temporary(tmp_path, monkeypatch):
    atomic_save({"v": torch.ones(4)}, tmp_path / "c.pth")

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_save({"v": torch.zeros(4)}, tmp_path / "c.pth")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["c.pth"]
    assert torch.equal(read_checkpoint(tmp_path / "c.pth")["v"], torch.ones(4))


_STUCK_IN_FSYNC = """
import os, sys, time, torch
from nnh.func import atomic_save

atomic_save({"version": 1, "w": torch.full((1000,), 1.0)}, "c.pth")

def stuck_fsync(fd):
    open("in_fsync", "w").close()
    time.sleep(60)

os.fsync = stuck_fsync
atomic_save({"version": 2, "w": torch.full((1000,), 2.0)}, "c.pth")
"""


def test_kill_during_save_leaves_the_previous_file(tmp_path):
    (tmp_path / "child.py").write_text(_STUCK_IN_FSYNC)
    child = subprocess.Popen([sys.executable, "child.py"], cwd=tmp_path, env=CHILD_ENV, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "in_fsync").exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # The new bytes sit complete in the temporary file, not yet renamed.
        temps = [f for f in os.listdir(tmp_path) if f.startswith(".c.pth.") and f.endswith(".tmp")]
        assert len(temps) == 1
        assert read_checkpoint(tmp_path / temps[0])["version"] == 2
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
    got = read_checkpoint(tmp_path / "c.pth")
    assert got["version"] == 1 and torch.equal(got["w"], torch.full((1000,), 1.0))


_SAVE_LOOP = """
import sys, torch
from nnh.func import atomic_save

i = 0
while True:
    i += 1
    atomic_save({"i": i, "w": torch.full((2_000_000,), float(i))}, "c.pth")  # 8 MB
    print(i, flush=True)
"""


def test_kill_at_an_arbitrary_moment_never_leaves_a_torn_file(tmp_path):
    (tmp_path / "child.py").write_text(_SAVE_LOOP)
    child = subprocess.Popen([sys.executable, "child.py"], cwd=tmp_path, env=CHILD_ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        done = [int(child.stdout.readline()) for _ in range(3)]  # three complete saves
        assert done == [1, 2, 3], child.stderr.read()
        time.sleep(0.013)  # land somewhere inside a later save
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
    got = read_checkpoint(tmp_path / "c.pth")
    assert got["i"] >= 3
    assert torch.equal(got["w"], torch.full((2_000_000,), float(got["i"])))  # one whole version


# ---------------------------------------------------------------------------- read_checkpoint
class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_read_checkpoint_refuses_pickled_objects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"w": torch.ones(2), "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"Refusing to load .*evil\.pth.*pickled payload"):
        read_checkpoint(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned.txt").exists()


@pytest.mark.parametrize("name, content, words", [
    ("empty.pth", b"", "is empty"),
    ("random.pth", bytes(range(256)) * 8, "not a torch checkpoint"),
    ("legacy.pth", None, "legacy format"),
    ("half.pth", "half", "not a torch checkpoint"),
    ("notorch.zip", "zip", "truncated or corrupt"),
    ("pickle.pkl", pickle.dumps({"a": 1}), "not a torch checkpoint"),
])
def test_read_checkpoint_errors_name_the_path(tmp_path, name, content, words):
    path = tmp_path / name
    if content is None:
        torch.save({"a": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    elif content == "half":
        torch.save({"a": torch.randn(1000)}, tmp_path / "full.pth")
        data = (tmp_path / "full.pth").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("hello.txt", "hello")
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=words) as err:
        read_checkpoint(path)
    assert repr(str(path)) in str(err.value)


def test_read_checkpoint_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")


def test_atomic_write_text_mode_writes_as_given_and_a_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / "new" / "log.csv"
    old = os.umask(0o027)
    try:
        atomic_write(path, lambda f: f.write("a,b\r\n1,2\r\n"), text=True)
    finally:
        os.umask(old)
    assert path.read_bytes() == b"a,b\r\n1,2\r\n"  # newline="": no translation
    assert os.stat(path).st_mode & 0o777 == 0o640

    def broken(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert os.listdir(path.parent) == ["log.csv"] and path.read_bytes() == b"a,b\r\n1,2\r\n"


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    old = os.umask(0o022)
    try:
        for mode in (0o640, 0o600, 0o664):
            atomic_save({"a": 1}, tmp_path / "c.pth")
            os.chmod(tmp_path / "c.pth", mode)
            atomic_save({"a": 2}, tmp_path / "c.pth")
            assert os.stat(tmp_path / "c.pth").st_mode & 0o777 == mode
        atomic_save({"a": 3}, tmp_path / "new.pth")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "new.pth").st_mode & 0o777 == 0o644  # a new file: 0666 less the umask


def _as_user(uid: int, fn) -> str:
    """Run `fn()` in a forked child with the user and group ids `uid` (needs root); return
    what it printed as text: "ok", or the exception's type and message."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nnh and torch are imported already, nothing more is read
        os.close(read)
        try:
            os.setgid(uid)
            os.setuid(uid)
            fn()
            result = "ok"
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            result = f"{type(exc).__name__}: {exc}"
        os.write(write, result.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        result = f.read()
    os.waitpid(pid, 0)
    return result


def test_atomic_write_refuses_a_file_this_user_may_not_write(tmp_path):
    # The rename needs only a writable folder, so the file's own mode has to be checked, as
    # open(path, "w") checks it. Root may write any file: as root the same file is replaced
    # (keeping its mode), and the refusal is checked in a child running as user 'nobody', in a
    # folder under /tmp (tmp_path's parents are private to root).
    root = os.geteuid() == 0
    folder = tempfile.mkdtemp(prefix="nnh-shared-") if root else str(tmp_path)
    try:
        os.chmod(folder, 0o777)  # writable by everyone: the rename alone would succeed
        target = os.path.join(folder, "c.pth")
        atomic_save({"v": 1}, target)
        os.chmod(target, 0o444)
        if not root:
            with pytest.raises(PermissionError, match=r"c\.pth.*not writable by this user.*-r--r--r--"):
                atomic_save({"v": 2}, target)
        else:
            nobody = 65534
            for owner, mode in ((0, 0o644), (nobody, 0o444)):  # root's file; the user's own read-only one
                os.chown(target, owner, owner)
                os.chmod(target, mode)
                result = _as_user(nobody, lambda: atomic_save({"v": 2}, target))
                assert result.startswith("PermissionError") and "not writable by this user" in result, result
            os.chmod(target, 0o444)
            atomic_save({"v": 3}, target)  # root itself: open() would succeed, so this does too
            assert read_checkpoint(target)["v"] == 3 and os.stat(target).st_mode & 0o777 == 0o444
            atomic_save({"v": 1}, target)
        assert read_checkpoint(target)["v"] == 1 and os.listdir(folder) == ["c.pth"]
    finally:
        if root:
            shutil.rmtree(folder, ignore_errors=True)


def test_read_checkpoint_of_a_directory_says_it_is_one(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file") as err:
        read_checkpoint(tmp_path)
    assert repr(str(tmp_path)) in str(err.value)


# ---------------------------------------------------------------------------- checksums
def _awkward_tensors() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(1000, 517, generator=g),  # 4 KiB blocks and a partial one
        torch.randint(-2**62, 2**62, (5000,), dtype=torch.int64, generator=g),
        torch.randn(7, dtype=torch.bfloat16, generator=g),  # 14 bytes: a zero-padded tail word
        torch.tensor(True), torch.zeros(0), torch.tensor(3.5),
        torch.randn(30, 40, generator=g).t(),  # not contiguous: its logical order counts
        torch.arange(100, dtype=torch.uint8)[3:50],  # a view at an unaligned offset
        torch.randn(3, dtype=torch.complex64, generator=g),
    ]


def test_tensor_checksum_is_the_same_on_every_path():
    # The CPU reads through numpy, other devices through torch ops: the value must not differ.
    for t in _awkward_tensors():
        raw = _raw_bytes(t)
        assert _blocksum_numpy(raw.numpy()) == int(_blocksum_torch(raw)), t.dtype
        assert tensor_checksum(t) == tensor_checksum(t.contiguous().clone())
    assert tensor_checksum(torch.zeros(3)) == 0  # the shape is in the metadata hash, not here


def test_checksums_summed_in_pieces_by_several_threads_equal_the_whole(monkeypatch):
    # A piece of 3 blocks cuts the tensors at many places, the partial last block included.
    import nnh.func.checksum as checksum

    tensors = _awkward_tensors() + [torch.randn(40_000, generator=torch.Generator().manual_seed(2))]
    whole = [tensor_checksum(t) for t in tensors]
    raw = _raw_bytes(tensors[0]).numpy()
    parts = [_blocksum_numpy(raw, b, b + 3) for b in range(0, checksum._blocks(raw), 3)]
    assert checksum._to_int64(sum(parts)) == whole[0]
    monkeypatch.setattr(checksum, "_PIECE", 3)
    for workers in (1, 2, 3):
        assert checksum._checksums(tensors, workers).tolist() == whole


def test_tensor_checksum_detects_every_single_byte_change_and_moved_blocks():
    t = torch.randn(3000, generator=torch.Generator().manual_seed(1))  # 12000 bytes: 3 blocks
    base = tensor_checksum(t)
    raw = t.view(torch.uint8)
    for at in range(raw.numel()):
        changed = raw.clone()
        changed[at] ^= 1 << (at % 8)
        assert tensor_checksum(changed) != base, at
    swapped = t.clone()
    swapped[:1024], swapped[1024:2048] = t[1024:2048], t[:1024]  # two 4 KiB blocks exchanged
    assert tensor_checksum(swapped) != base


def test_checksum_round_trip_and_a_changed_file_names_the_tensor(tmp_path):
    ckpt = add_checksum({"w": {"layer.weight": torch.randn(64, 64), "step": torch.tensor(3)},
                         "meta": [1, "x", None, 2.5, (True,)], "tags": {"a", "b"}})
    assert list(ckpt)[-1] == CHECKSUM_KEY
    atomic_save(ckpt, tmp_path / "c.pth")
    got = torch.load(tmp_path / "c.pth", weights_only=True)  # still plain data
    verify_checksum(got, str(tmp_path / "c.pth"))
    got["w"]["layer.weight"][5, 5] += 1
    with pytest.raises(CheckpointError, match=r"c\.pth.*corrupt.*1 tensor.*w\.layer\.weight"):
        verify_checksum(got, str(tmp_path / "c.pth"))
    # A byte flipped in the file, inside the tensor's data.
    data = bytearray((tmp_path / "c.pth").read_bytes())
    with zipfile.ZipFile(tmp_path / "c.pth") as z:
        info = next(i for i in z.infolist() if i.filename.endswith("/data/0"))
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + 100] ^= 0x10
    (tmp_path / "bad.pth").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"bad\.pth.*corrupt.*layer\.weight"):
        read_checkpoint(tmp_path / "bad.pth")
    changed = dict(torch.load(tmp_path / "c.pth", weights_only=True), meta=[1, "y", None, 2.5, (True,)])
    with pytest.raises(CheckpointError, match="corrupt.*plain values"):
        verify_checksum(changed, "c.pth")


def test_add_checksum_refuses_what_a_weights_only_load_would_refuse():
    class Opaque:
        pass

    with pytest.raises(Unstorable, match=r"\['a'\]\[1\]: a .*Opaque cannot be stored") as err:
        add_checksum({"a": [1, Opaque()]})
    assert err.value.keys == ("a", 1) and isinstance(err.value, TypeError)
    with pytest.raises(Unstorable, match="IntEnumish"):
        class IntEnumish(int):
            pass
        add_checksum({"n": IntEnumish(3)})


# ---------------------------------------------------------------------------- import paths
def test_import_path_of_importable_and_non_importable_objects():
    assert import_path(torch.optim.AdamW) == "torch.optim.adamw:AdamW"
    assert import_path(torch.nn.functional.cross_entropy) == "torch.nn.functional:cross_entropy"
    assert import_path(torch.relu) == "torch:relu"  # a builtin: its qualname is not importable
    assert import_path(ModelType) == "nnh.stateful.enums:ModelType"
    assert import_path(lambda x: x) is None

    def local():
        pass

    assert import_path(local) is None
    assert import_object("torch.optim.lr_scheduler:StepLR") is torch.optim.lr_scheduler.StepLR
    with pytest.raises(ValueError, match="package.module:QualName"):
        import_object("torch.optim.Adam")


# ---------------------------------------------------------------------------- encode / decode
def test_encode_decode_round_trip_through_a_weights_only_file(tmp_path):
    value = {
        "dtype": torch.bfloat16, "device": torch.device("cpu"), "tuple": (1, 2.5, "a"),
        "nested": {"list": [None, True, torch.arange(3)]}, "cls": torch.optim.SGD,
        "fn": torch.nn.functional.mse_loss, "enum": ModelType.GENERATIVE, "np_f": np.float32(0.25),
        "np_i": np.int64(7), "np_b": np.bool_(True), "size": torch.Size([2, 3]),
    }
    encoded = encode_value(value, "v")
    atomic_save(encoded, tmp_path / "v.pth")
    decoded = decode_value(read_checkpoint(tmp_path / "v.pth"))
    assert decoded["dtype"] is torch.bfloat16 and decoded["device"] == torch.device("cpu")
    assert decoded["tuple"] == (1, 2.5, "a")
    assert decoded["nested"]["list"][:2] == [None, True]
    assert torch.equal(decoded["nested"]["list"][2], torch.arange(3))
    assert decoded["cls"] is torch.optim.SGD and decoded["fn"] is torch.nn.functional.mse_loss
    assert decoded["enum"] is ModelType.GENERATIVE
    assert (decoded["np_f"], decoded["np_i"], decoded["np_b"]) == (0.25, 7, True)
    assert [type(decoded[k]) for k in ("np_f", "np_i", "np_b")] == [float, int, bool]
    assert decoded["size"] == (2, 3)


def test_unrecorded_values_are_listed_and_can_be_provided():
    class Color(enum.Enum):  # local: not importable
        RED = "red"

    unrecorded = []
    fn = lambda x: x  # noqa: E731
    encoded = encode_value({"act": fn, "local_enum": Color.RED, "ok": 1}, "model_kwargs", unrecorded=unrecorded)
    assert [slot for slot, _ in unrecorded] == ["model_kwargs.act", "model_kwargs.local_enum"]
    decoded = decode_value(encoded)
    assert decoded["ok"] == 1
    assert [u.slot for u in find_unrecorded(decoded)] == ["model_kwargs.act", "model_kwargs.local_enum"]
    assert isinstance(decoded["act"], Unrecorded)
    provided = decode_value(encoded, provided={"model_kwargs.act": fn, "model_kwargs.local_enum": Color.RED})
    assert provided["act"] is fn and provided["local_enum"] is Color.RED


def test_bound_objects_and_recorded_constructors():
    module = torch.nn.Linear(2, 2)
    encoded = encode_value({"model": module}, "kw", bindings={id(module): "handler.module"})
    assert encoded == {"model": {"__nnh__": "bound", "name": "handler.module"}}
    other = torch.nn.Linear(2, 2)
    assert decode_value(encoded, bindings={"handler.module": other})["model"] is other
    with pytest.raises(CheckpointError, match="handler.module"):
        decode_value(encoded)

    cb = CountingCallback(tag="z")
    cb.epochs_seen = 4
    back = decode_value(encode_value(cb, "callbacks[0]"))
    assert type(back) is CountingCallback and back.tag == "z" and back.epochs_seen == 4


class Recorded(RecordsInit):
    """Records its arguments with the path hook, as `nnh.callbacks.Callback` does."""

    @classmethod
    def _recorded_value(cls, value):
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    def __init__(self, where, scale=1.0):  # no super().__init__: recorded all the same
        self.where, self.scale = where, scale


def test_records_init_is_the_one_recorder_and_encode_value_reads_it(tmp_path):
    from nnh import ConstantScheduler, HarmonicModel, LangevinDynamics
    from nnh.callbacks import Callback, EarlyStopping

    obj = Recorded(tmp_path / "a", scale=2.0)
    assert (obj.init_args, obj.init_kwargs) == ((str(tmp_path / "a"),), {"scale": 2.0})
    assert recorded_init(obj) == ((str(tmp_path / "a"),), {"scale": 2.0})
    encoded = encode_value(obj, "x")
    assert encoded["path"].endswith(":Recorded") and encoded["kwargs"] == {"scale": 2.0}
    back = decode_value(encoded)
    assert type(back) is Recorded and (back.where, back.scale) == (str(tmp_path / "a"), 2.0)
    # The three families share it; the public attributes are what a checkpoint stores.
    early, constant = EarlyStopping(patience=3), ConstantScheduler(0.5)
    langevin = LangevinDynamics(HarmonicModel(), step_size=constant)
    assert all(isinstance(o, RecordsInit) for o in (early, constant, langevin))
    assert issubclass(Callback, RecordsInit) and early.handler is None
    assert langevin.init_kwargs["step_size"] is constant
    assert decode_value(encode_value(constant, "s")).get_value() == 0.5
    # Classes are never taken for recorded objects, and a plain object records nothing.
    assert recorded_init(Recorded) is None and recorded_init(object()) is None


def test_unknown_tag_is_reported_as_a_newer_format():
    with pytest.raises(CheckpointError, match="newer nnh"):
        decode_value({"__nnh__": "hologram"})


# ---------------------------------------------------------------------------- train state <-> dict
def test_load_state_from_dict_copies_in_place_and_lists_mismatches():
    target = torch.zeros(3)
    state = TensorDict({"params": TensorDict({"w": target, "b": torch.zeros(2)}, batch_size=[])}, batch_size=[])
    load_state_from_dict(state, {"params": {"w": torch.ones(3), "b": torch.ones(2)}})
    assert torch.equal(target, torch.ones(3))  # the same tensor object, updated
    assert torch.equal(state_to_dict(state)["params"]["b"], torch.ones(2))
    with pytest.raises(CheckpointError) as err:
        load_state_from_dict(state, {"params": {"w": torch.ones(4), "extra": torch.ones(1)}})
    msg = str(err.value)
    assert "missing keys ['params.b']" in msg and "unexpected keys ['params.extra']" in msg
    assert "params.w: checkpoint (4,) vs state (3,)" in msg


def test_a_state_saved_before_acc_nonfinite_existed_loads_strictly():
    from nnh.func import init_train_state, load_state_from_dict, state_to_dict

    m = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    old = state_to_dict(init_train_state(m, opt))
    del old["acc_nonfinite"]
    fresh = init_train_state(torch.nn.Linear(3, 2), None)
    fresh["acc_nonfinite"].fill_(True)
    del old["optim"]
    load_state_from_dict(fresh, old)
    assert not bool(fresh["acc_nonfinite"])
    assert torch.equal(fresh["params", "weight"], m.weight)


def test_a_lenient_load_copies_every_key_it_has_and_names_every_misfit():
    w, b, c = torch.zeros(3), torch.zeros(2), torch.zeros(1)
    state = TensorDict({"a": TensorDict({"x": torch.zeros(1)}, batch_size=[]), "w": w, "b": b, "c": c}, batch_size=[])
    # "a" missing comes first: the keys after it are still copied.
    load_state_from_dict(state, {"w": torch.ones(3), "b": torch.ones(2)}, strict=False)
    assert torch.equal(w, torch.ones(3)) and torch.equal(b, torch.ones(2))
    with pytest.raises(CheckpointError) as err:
        load_state_from_dict(state, {"a": 5, "w": 7, "b": torch.ones(2), "c": torch.ones(1)})
    msg = str(err.value)
    assert "a: expected a dict" in msg and "w: checkpoint int vs state (3,)" in msg


def test_the_temporary_file_sits_beside_the_target_and_a_name_collision_is_retried(tmp_path, monkeypatch):
    import nnh.func.checkpoint as checkpoint

    names = iter(["taken", "free"])
    monkeypatch.setattr(checkpoint.secrets, "token_hex", lambda n: next(names))
    (tmp_path / ".c.pth.taken.tmp").write_bytes(b"another writer's")
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(checkpoint.os, "replace", lambda src, dst: (renamed.append(src), real_replace(src, dst)))
    atomic_save({"x": torch.ones(2)}, tmp_path / "c.pth")
    assert renamed == [str(tmp_path / ".c.pth.free.tmp")]
    assert (tmp_path / ".c.pth.taken.tmp").read_bytes() == b"another writer's"
    assert torch.equal(read_checkpoint(tmp_path / "c.pth")["x"], torch.ones(2))


def test_read_checkpoint_maps_tensors_where_asked(tmp_path):
    atomic_save({"x": torch.ones(3)}, tmp_path / "c.pth")
    assert read_checkpoint(tmp_path / "c.pth", map_location="meta", verify=False)["x"].device.type == "meta"


def test_a_zip_whose_end_record_spans_disks_is_no_checkpoint(tmp_path):
    # zipfile.is_zipfile raises (not answers False) for a zip64 locator naming several disks.
    torch.save({"a": torch.ones(3)}, tmp_path / "full.pth")
    data = bytearray((tmp_path / "full.pth").read_bytes())
    locator = data.rfind(b"PK\x06\x07")
    assert locator > 0
    data[locator + 16] = 2  # "total number of disks"
    (tmp_path / "disks.pth").write_bytes(bytes(data))
    with pytest.raises(zipfile.BadZipFile):
        zipfile.is_zipfile(tmp_path / "disks.pth")
    with pytest.raises(CheckpointError, match="not a torch checkpoint: it is no zip archive") as err:
        read_checkpoint(tmp_path / "disks.pth")
    assert repr(str(tmp_path / "disks.pth")) in str(err.value)


def test_a_mapped_read_copies_the_tensors_nested_in_lists_and_tuples_out_of_the_file(tmp_path):
    # Each tensor is distinct, so its bytes can be found in the file and changed there after
    # the read: the values returned are copies, not the file's mapped pages.
    a, b, c = (torch.arange(64, dtype=torch.float64) + k + 0.25 for k in (1000, 2000, 3000))
    path = tmp_path / "c.pth"
    atomic_save(add_checksum({"l": [a, (b, 7)], "d": {"c": c}}), path)
    got = read_checkpoint(path, map_location="cpu")
    assert isinstance(got["l"], list) and isinstance(got["l"][1], tuple) and got["l"][1][1] == 7
    for t, ref in ((got["l"][0], a), (got["l"][1][0], b), (got["d"]["c"], c)):
        assert torch.equal(t, ref)
    with open(path, "r+b") as f:
        data = f.read()
        for ref in (a, b, c):
            at = data.find(ref.numpy().tobytes())
            assert at > 0
            f.seek(at)
            f.write(torch.zeros(64, dtype=torch.float64).numpy().tobytes())
    for t, ref in ((got["l"][0], a), (got["l"][1][0], b), (got["d"]["c"], c)):
        assert torch.equal(t, ref)


def test_a_mapped_read_names_the_path_when_the_plain_values_changed(tmp_path):
    sealed = add_checksum({"w": torch.ones(3), "n": 4})
    atomic_save({**sealed, "n": 5}, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match="corrupt.*plain values") as err:
        read_checkpoint(tmp_path / "c.pth", map_location="cpu")
    assert repr(str(tmp_path / "c.pth")) in str(err.value)


def test_a_writer_whose_temporary_names_are_all_taken_gives_up_after_100_tries(tmp_path, monkeypatch):
    import nnh.func.checkpoint as checkpoint

    tries = []
    monkeypatch.setattr(checkpoint.secrets, "token_hex", lambda n: tries.append(n) or "taken")
    (tmp_path / ".c.pth.taken.tmp").write_bytes(b"another writer's")
    with pytest.raises(FileExistsError, match="could not create a temporary file"):
        atomic_save({"x": torch.ones(2)}, tmp_path / "c.pth")
    assert len(tries) == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == [".c.pth.taken.tmp"]
