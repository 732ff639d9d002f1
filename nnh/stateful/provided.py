"""What `NNHandler.load`'s keywords supply: objects a checkpoint recorded by name only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nnh.func.checkpoint import CheckpointError

__all__ = ["check_provided", "provided_slots", "how_to_provide", "raise_missing"]

_OBJECTS = ("model_class", "loss_fn", "optimizer_class", "scheduler_class", "sde", "sampler", "sampler_class")
_GROUPS = ("model_kwargs", "sampler_kwargs", "optimizer_kwargs", "scheduler_kwargs", "loss_fn_kwargs")


def check_provided(provided: dict[str, Any]) -> dict[str, Any]:
    """`NNHandler.load`'s keywords, checked before the file is read: unknown names and values
    of the wrong type raise TypeError naming the keyword; a keyword passed as None counts as
    not passed (the saved value is used), and is dropped."""
    unknown = set(provided) - {*_OBJECTS, *_GROUPS, "metrics", "callbacks"}
    if unknown:
        raise TypeError(f"NNHandler.load got unexpected keyword arguments {sorted(unknown)}.")
    given = {k: v for k, v in provided.items() if v is not None}
    for group in (*_GROUPS, "metrics"):
        value = given.get(group)
        if value is not None and not (isinstance(value, Mapping) and all(isinstance(k, str) for k in value)):
            raise TypeError(f"NNHandler.load: {group}= takes a dict {{name: value}} with string names, got "
                            f"{type(value).__name__} {value!r}.")
    for name, fn in given.get("metrics", {}).items():
        if not callable(fn):
            raise TypeError(f"NNHandler.load: metrics={{{name!r}: ...}} takes a metric function (outputs, "
                            f"targets) -> value, got {type(fn).__name__} {fn!r}.")
    callbacks = given.get("callbacks")
    if callbacks is not None and not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"NNHandler.load: callbacks= takes a list of callbacks (it replaces the saved ones), got "
                        f"{type(callbacks).__name__} {callbacks!r}.")
    return given


def provided_slots(provided: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint slots (`encode_value`'s names) that the keywords `provided` supply
    (as `check_provided` returned them)."""
    slots = {k: v for k, v in provided.items() if k in _OBJECTS and k != "sampler"}
    for group in _GROUPS:
        for name, value in provided.get(group, {}).items():
            slots[f"{group}.{name}"] = value
    for name, fn in provided.get("metrics", {}).items():
        slots[f"metrics.{name}"] = fn
    return slots


def how_to_provide(slot: str) -> str:
    """The `NNHandler.load` keyword that supplies what a checkpoint recorded under `slot`."""
    head, _, rest = slot.partition(".")
    head, bracket, _ = head.partition("[")
    name = rest.split(".")[0].split("[")[0]
    if head == "callbacks":
        return "callbacks=[...] (the whole list; it replaces the saved callbacks)"
    if head in ("sampler_state", "sampler_class") or (head == "sampler_kwargs" and not name):
        return "sampler=<a ready Sampler instance>" if head == "sampler_state" else f"{head}=..."
    if head == "sde":
        return "sde=<a ready SDE instance>"
    if head == "metrics":
        return f"metrics={{{name!r}: ...}}"
    if head.endswith("_kwargs") and name:
        return f"{head}={{{name!r}: ...}}"
    return f"{head}=..."


def raise_missing(needs: list, path: str) -> None:
    if needs:
        listed = ", ".join(f"{u.slot} ({u.name})" for u in needs)
        how = ", ".join(dict.fromkeys(how_to_provide(u.slot) for u in needs))
        needs.clear()
        raise CheckpointError(
            f"{path!r} recorded {listed} by name only (not importable when saved); pass them to "
            f"NNHandler.load: NNHandler.load(path, {how})."
        )
