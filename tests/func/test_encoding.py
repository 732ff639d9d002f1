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
    """Recorded arguments, positional and keyword, and a state; each holds a bound object
    and one recorded by name only."""

    def __init__(self, first, second, *, fn=None, other=None):
        self.first, self.second, self.fn, self.other = first, second, fn, other
        self.count, self.peer, self.hook = 0, None, None

    def state_dict(self):
        return {"count": self.count, "peer": self.peer, "hook": self.hook}

    def load_state_dict(self, state):
        self.count, self.peer, self.hook = state["count"], state["peer"], state["hook"]


class NoState(RecordsInit):
    """state_dict() returns None; load_state_dict must then not be called."""

    def __init__(self, n):
        self.n = n

    def state_dict(self):
        return None

    def load_state_dict(self, state):
        raise AssertionError("load_state_dict(None) called")


class SaveOnly(RecordsInit):
    """A state, but nothing to load it into (it is dropped on load)."""

    def __init__(self, n):
        self.n = n

    def state_dict(self):
        return {"n": self.n}


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


def test_objects_of_main_are_never_imported_by_path(monkeypatch):
    # Even one that __main__ holds: another process's __main__ is another program.
    import functools
    import sys

    def fn():
        pass

    fn.__module__ = "__main__"
    monkeypatch.setattr(sys.modules["__main__"], "fn", fn, raising=False)
    assert import_path(fn) is None
    assert import_path(functools.partial(print)) is None  # no __qualname__, no __name__


def test_slots_bindings_and_provided_values_reach_every_nesting_level():
    module = torch.nn.Linear(2, 2)
    a, b, c = (lambda x: x), (lambda x: x + 1), (lambda x: x + 2)  # recorded by name only

    class Local:  # not importable: recorded by name only
        pass

    local = Local()
    holder = Holder(module, a, fn=b, other=module)
    holder.count, holder.peer, holder.hook = 7, module, c
    value = [(holder, module), {"obj": local}]
    unrecorded: list = []
    data = encode_value(value, "x", {id(module): "model"}, unrecorded)
    slots = ["x[0][0].args[1]", "x[0][0].kwargs.fn", "x[0][0].state.hook", "x[1].obj"]
    assert unrecorded == list(zip(slots, [a.__qualname__, b.__qualname__, c.__qualname__, Local.__qualname__]))

    other = torch.nn.Linear(2, 2)
    left = decode_value(data, {"model": other})
    missing = [left[0][0].second, left[0][0].fn, left[0][0].hook] + find_unrecorded(left)
    assert [(u.slot, u.name) for u in missing] == unrecorded

    given = [lambda x: 0, lambda x: 1, lambda x: 2, Local()]
    got = decode_value(data, {"model": other}, dict(zip(slots, given)))
    holder2, module2 = got[0]
    assert isinstance(holder2, Holder) and module2 is other
    assert holder2.first is other and holder2.other is other and holder2.peer is other and holder2.count == 7
    assert [holder2.second, holder2.fn, holder2.hook, got[1]["obj"]] == given
    assert find_unrecorded(got) == []


def test_recorded_objects_without_state_and_callable_ones():
    cases = [(Stateless(3), None), (CallableRecorded(4), None), (NoState(5), None), (SaveOnly(6), {"n": 6})]
    for obj, state in cases:
        data = encode_value(obj, "s")
        assert data["__nnh__"] == "object" and data["state"] == state
        back = decode_value(data)
        assert type(back) is type(obj) and back.init_args == obj.init_args


def test_plain_types_lose_their_subclass_and_a_lone_lambda_is_named():
    class Name(str):
        pass

    encoded = encode_value(Name("adam"), "s")
    assert encoded == "adam" and type(encoded) is str
    assert encode_value(lambda: 0, "fn")["name"].endswith("<lambda>")  # no unrecorded list given
    assert find_unrecorded([Unrecorded("a", "b"), (1, Unrecorded("c", "d"))])[1].slot == "c"
