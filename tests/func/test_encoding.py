"""nnh.func.encoding: how values nested in lists, tuples and recorded objects are encoded."""

from __future__ import annotations

import torch

from nnh._init_record import RecordsInit
from nnh.func import Unrecorded, decode_value, encode_value, find_unrecorded, import_object, import_path


class Outer:
    class Inner:  # importable by its qualified name only
        pass


def _made_in_a_factory():
    def exported(x):
        return x
    return exported


# Importable by its name, although its qualname holds "<locals>".
exported = _made_in_a_factory()


class Holder(RecordsInit):
    """Recorded constructor arguments, with a state that `load_state_dict` restores."""

    def __init__(self, first, *, fn=None, scale=1.0):
        self.first, self.fn, self.scale, self.count = first, fn, scale, 0

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


class Stateless(RecordsInit):
    """Recorded arguments, and no state_dict / load_state_dict at all."""

    def __init__(self, n):
        self.n = n


class CallableRecorded(RecordsInit):
    def __init__(self, k):
        self.k = k

    def __call__(self, x):
        return self.k * x


def test_import_paths_of_nested_and_factory_made_objects():
    assert import_path(Outer.Inner) == f"{__name__}:Outer.Inner"
    assert import_object(f"{__name__}:Outer.Inner") is Outer.Inner
    assert import_path(exported) == f"{__name__}:exported"
    assert import_path(5) is None  # no __module__ at all


def test_objects_claiming_main_are_never_imported_by_path():
    def fn():
        pass

    fn.__module__ = "__main__"
    assert import_path(fn) is None


def test_slots_bindings_and_provided_values_reach_every_nesting_level():
    module = torch.nn.Linear(2, 2)
    secret = lambda x: x  # noqa: E731 - recorded by name only

    class Local:  # not importable: recorded by name only
        pass

    local = Local()
    holder = Holder(module, fn=secret, scale=2.0)
    holder.count = 7
    value = [(holder, module), {"obj": local}]
    unrecorded: list = []
    data = encode_value(value, "x", {id(module): "model"}, unrecorded)
    assert unrecorded == [("x[0][0].kwargs.fn", secret.__qualname__), ("x[1].obj", Local.__qualname__)]

    other = torch.nn.Linear(2, 2)
    left = decode_value(data, {"model": other})
    missing = [left[0][0].fn] + find_unrecorded(left)
    assert [u.slot for u in missing] == ["x[0][0].kwargs.fn", "x[1].obj"]
    assert [u.name for u in missing] == [secret.__qualname__, Local.__qualname__]

    fn2, local2 = (lambda x: 2 * x), Local()
    got = decode_value(data, {"model": other}, {"x[0][0].kwargs.fn": fn2, "x[1].obj": local2})
    holder2, module2 = got[0]
    assert isinstance(holder2, Holder) and holder2.first is other and module2 is other
    assert holder2.fn is fn2 and holder2.scale == 2.0 and holder2.count == 7
    assert got[1]["obj"] is local2 and find_unrecorded(got) == []


def test_recorded_objects_without_state_and_callable_ones():
    for obj in (Stateless(3), CallableRecorded(4)):
        data = encode_value(obj, "s")
        assert data["__nnh__"] == "object" and data["state"] is None
        back = decode_value(data)
        assert type(back) is type(obj) and back.init_args == obj.init_args


def test_plain_types_lose_their_subclass_and_a_lone_lambda_is_named():
    class Name(str):
        pass

    encoded = encode_value(Name("adam"), "s")
    assert encoded == "adam" and type(encoded) is str
    assert encode_value(lambda: 0, "fn")["name"].endswith("<lambda>")  # no unrecorded list given
    assert find_unrecorded([Unrecorded("a", "b"), (1, Unrecorded("c", "d"))])[1].slot == "c"
