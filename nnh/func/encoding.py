"""Classes, functions and recorded objects as plain data: import paths instead of pickles.

`encode_value` turns a value into tensors and plain Python values (a class or function into
its import path, a `RecordsInit` object into class + constructor arguments + state), and
`decode_value` imports and rebuilds them; what cannot be imported again is recorded by name
(`Unrecorded`) for the caller to supply.
"""

from __future__ import annotations

import enum
import importlib
from typing import Any

import numpy as np
import torch

from nnh._init_record import recorded_init
from nnh.func._errors import CheckpointError

__all__ = ["import_path", "import_object", "encode_value", "decode_value", "find_unrecorded", "Unrecorded"]


def import_path(obj: Any) -> str | None:
    """``"module:QualName"`` for a class or function that can be imported again, else None
    (lambdas, local objects, anything defined in ``__main__`` or a notebook)."""
    module = getattr(obj, "__module__", None)
    if not module or module == "__main__":
        return None
    # Builtins such as torch.relu have a qualname ("_VariableFunctionsClass.relu") that is not
    # importable, while their plain name is: try both.
    for name in dict.fromkeys((getattr(obj, "__qualname__", None), getattr(obj, "__name__", None))):
        if not isinstance(name, str) or "<" in name:
            continue
        try:
            if import_object(f"{module}:{name}") is obj:
                return f"{module}:{name}"
        except (ImportError, AttributeError, ValueError):
            continue
    return None


def import_object(path: str) -> Any:
    """Import ``"module:QualName"`` and return the object."""
    if ":" not in path:
        raise ValueError(f"import_object: {path!r} is not of the form 'package.module:QualName'.")
    module_name, qualname = path.split(":", 1)
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


# ---------------------------------------------------------------- objects as import paths
_TAG = "__nnh__"


class Unrecorded:
    """Placeholder for a value that a checkpoint recorded by name only (see `encode_value`)."""

    def __init__(self, slot: str, name: str) -> None:
        self.slot, self.name = slot, name

    def __repr__(self) -> str:
        return f"Unrecorded({self.slot!r}, {self.name!r})"


def encode_value(value: Any, slot: str, bindings: dict[int, str] | None = None,
                 unrecorded: list[tuple[str, str]] | None = None) -> Any:
    """Encode `value` as tensors and plain values that `torch.load(weights_only=True)` reads.

    - None, bool, int, float, str and tensors stay as they are (subclasses and NumPy scalars
      become the plain type); lists, tuples and dicts with string keys are encoded item by
      item; dtypes and devices become tagged strings; members of importable Enums become
      their class path and name.
    - An object whose identity is in `bindings` becomes a reference by name (e.g. the
      handler's own module, bound again to the loaded handler's module).
    - Importable classes and functions become ``{"__nnh__": "import", "path": ...}``.
    - Objects that record their constructor arguments (`init_args`/`init_kwargs`, as
      `nnh.Sampler`, callbacks and MCMC schedulers do through `nnh._init_record.RecordsInit`;
      see `recorded_init`) become their class path, encoded arguments and `state_dict()`.
    - Anything else (a lambda, a class from ``__main__``) is recorded by name only, and
      `(slot, name)` is appended to `unrecorded` so the caller can warn.
    """
    bindings = bindings or {}
    if unrecorded is None:
        unrecorded = []
    if value is None or type(value) in (bool, int, float, str) or isinstance(value, torch.Tensor):
        return value
    if isinstance(value, enum.Enum):
        path = import_path(type(value))
        if path is not None:
            return {_TAG: "enum", "path": path, "name": value.name}
    elif isinstance(value, (bool, np.bool_)):
        return bool(value)
    elif isinstance(value, (int, np.integer)):
        # Subclasses and NumPy scalars would be pickled by class, and a weights_only load
        # refuses them: store the plain value.
        return int(value)
    elif isinstance(value, (float, np.floating)):
        return float(value)
    elif isinstance(value, str):
        return str.__str__(value)
    if id(value) in bindings:
        return {_TAG: "bound", "name": bindings[id(value)]}
    if isinstance(value, torch.dtype):
        return {_TAG: "dtype", "name": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {_TAG: "device", "name": str(value)}
    if isinstance(value, (list, tuple)):
        items = [encode_value(v, f"{slot}[{i}]", bindings, unrecorded) for i, v in enumerate(value)]
        return items if isinstance(value, list) else {_TAG: "tuple", "items": items}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: encode_value(v, f"{slot}.{k}", bindings, unrecorded) for k, v in value.items()}
    recorded = recorded_init(value)
    if recorded is None and callable(value):  # classes, and functions
        path = import_path(value)
        if path is not None:
            return {_TAG: "import", "path": path}
    elif recorded is not None:
        path = import_path(type(value))
        if path is not None:
            args, kwargs = recorded
            state = value.state_dict() if callable(getattr(value, "state_dict", None)) else None
            return {
                _TAG: "object",
                "path": path,
                "args": encode_value(list(args), f"{slot}.args", bindings, unrecorded),
                "kwargs": encode_value(dict(kwargs), f"{slot}.kwargs", bindings, unrecorded),
                "state": encode_value(state, f"{slot}.state", bindings, unrecorded),
            }
    name = getattr(value, "__qualname__", None) or type(value).__qualname__
    unrecorded.append((slot, name))
    return {_TAG: "unrecorded", "slot": slot, "name": name}


def decode_value(data: Any, bindings: dict[str, Any] | None = None, provided: dict[str, Any] | None = None) -> Any:
    """Invert `encode_value`. References by name are looked up in `bindings`; values that were
    recorded by name only are taken from `provided[slot]`, or left as `Unrecorded`."""
    bindings, provided = bindings or {}, provided or {}
    if isinstance(data, list):
        return [decode_value(v, bindings, provided) for v in data]
    if not isinstance(data, dict):
        return data
    tag = data.get(_TAG)
    if tag is None:
        return {k: decode_value(v, bindings, provided) for k, v in data.items()}
    if tag == "tuple":
        return tuple(decode_value(v, bindings, provided) for v in data["items"])
    if tag == "dtype":
        return getattr(torch, data["name"])
    if tag == "device":
        return torch.device(data["name"])
    if tag == "bound":
        if data["name"] not in bindings:
            raise CheckpointError(f"The checkpoint refers to {data['name']!r}, which this load does not provide.")
        return bindings[data["name"]]
    if tag == "import":
        return import_object(data["path"])
    if tag == "enum":
        return import_object(data["path"])[data["name"]]
    if tag == "object":
        cls = import_object(data["path"])
        obj = cls(*decode_value(data["args"], bindings, provided), **decode_value(data["kwargs"], bindings, provided))
        state = decode_value(data["state"], bindings, provided)
        if state is not None and callable(getattr(obj, "load_state_dict", None)):
            obj.load_state_dict(state)
        return obj
    if tag == "unrecorded":
        if data["slot"] in provided:
            return provided[data["slot"]]
        return Unrecorded(data["slot"], data["name"])
    raise CheckpointError(f"Unknown entry {tag!r} in a checkpoint; it was written by a newer nnh.")


def find_unrecorded(value: Any) -> list[Unrecorded]:
    """Every `Unrecorded` placeholder left inside a decoded value."""
    if isinstance(value, Unrecorded):
        return [value]
    if isinstance(value, (list, tuple)):
        return [u for v in value for u in find_unrecorded(v)]
    if isinstance(value, dict):
        return [u for v in value.values() for u in find_unrecorded(v)]
    return []
