"""What `NNHandler.load`'s keywords supply: objects a checkpoint recorded by name only."""

from __future__ import annotations

from typing import Any

from nnh.func.checkpoint import CheckpointError

__all__ = ["provided_slots", "how_to_provide", "raise_missing"]


def provided_slots(provided: dict[str, Any]) -> dict[str, Any]:
    slots = {k: v for k, v in provided.items() if k in ("model_class", "loss_fn", "optimizer_class", "scheduler_class", "sde", "sampler_class")}
    for group in ("model_kwargs", "sampler_kwargs", "optimizer_kwargs", "scheduler_kwargs", "loss_fn_kwargs"):
        for name, value in provided.get(group, {}).items():
            slots[f"{group}.{name}"] = value
    for name, fn in provided.get("metrics", {}).items():
        slots[f"metrics.{name}"] = fn
    unknown = set(provided) - {"model_class", "loss_fn", "optimizer_class", "scheduler_class", "sde", "sampler",
                               "sampler_class", "metrics", "model_kwargs", "sampler_kwargs", "optimizer_kwargs",
                               "scheduler_kwargs", "loss_fn_kwargs", "callbacks"}
    if unknown:
        raise TypeError(f"NNHandler.load got unexpected keyword arguments {sorted(unknown)}.")
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
