"""``metadata.managedFields`` as the API server keeps it for Update operations (create, update,
patch — not server-side apply).

Who is the manager: the ``fieldManager`` query parameter, else the User-Agent up to its first
``/`` (kubectl 1.37 sends none with cordon/uncordon: its manager is ``kubectl``). One entry per (manager,
operation, subresource). An operation that adds or changes a field takes it over from every other
manager (no conflicts for Update) and stamps its entry's ``time`` (RFC 3339, whole seconds); a
removed field leaves every entry; an entry left with no field is dropped; an operation that only
removes fields or changes nothing leaves the times alone.

Simplification: lists are owned as a whole (the real server tracks the elements of keyed lists
such as conditions or taints with ``k:{...}`` keys); the ``.`` markers of maps are not written.
Fields of entries written elsewhere (``k:``, ``v:`` keys) are kept as they are.
"""

from __future__ import annotations

from typing import Any

Path = tuple[str, ...]

# Metadata the server sets itself and never attributes to a manager.
_UNMANAGED_META = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    }
)
_MANAGER_MAX = 128


def manager_name(field_manager: str | None, user_agent: str) -> str:
    """The manager of a request, as the API server derives it."""
    if field_manager:
        return field_manager[:_MANAGER_MAX]
    prefix = user_agent.split("/", 1)[0].strip()
    return (prefix or "unknown")[:_MANAGER_MAX]


def _leaves(obj: Any, prefix: Path, out: set[Path]) -> None:
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            _leaves(value, (*prefix, f"f:{key}"), out)
    else:
        out.add(prefix)


def _diff(old: Any, new: Any, prefix: Path, changed: set[Path], removed: set[Path]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old.keys() - new.keys():
            removed.add((*prefix, f"f:{key}"))
        for key, value in new.items():
            path = (*prefix, f"f:{key}")
            if key not in old:
                _leaves(value, path, changed)
            else:
                _diff(old[key], value, path, changed, removed)
        return
    if old != new:
        if isinstance(old, dict):
            removed.add(prefix)
        _leaves(new, prefix, changed)


def _top(obj: dict[str, Any] | None) -> dict[str, Any]:
    """The object without what no manager owns."""
    if not obj:
        return {}
    top = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    meta = top.get("metadata")
    if isinstance(meta, dict):
        managed = {k: v for k, v in meta.items() if k not in _UNMANAGED_META}
        if managed:
            top["metadata"] = managed
        else:
            del top["metadata"]
    return top


def _flatten(fields: Any, prefix: Path, out: set[Path]) -> None:
    if not isinstance(fields, dict) or not fields:
        if prefix:
            out.add(prefix)
        return
    for key, value in fields.items():
        if key == ".":
            continue
        _flatten(value, (*prefix, key), out)


def _nest(paths: set[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path in sorted(paths):
        node = root
        for part in path:
            node = node.setdefault(part, {})
    return root


def _related(a: Path, b: Path) -> bool:
    """One path is the other or lies under it."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def track(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    *,
    manager: str,
    subresource: str | None,
    api_version: str,
    now: str,
) -> None:
    """Write ``new``'s managedFields for an Update operation by ``manager`` turning ``old`` into
    ``new`` (``old`` None: a create)."""
    changed: set[Path] = set()
    removed: set[Path] = set()
    _diff(_top(old), _top(new), (), changed, removed)
    changed.discard(())
    meta = new.setdefault("metadata", {})
    previous = (old or {}).get("metadata", {}).get("managedFields") or []
    entries: list[dict[str, Any]] = []
    mine: dict[str, Any] | None = None
    for raw in previous:
        if not isinstance(raw, dict):
            continue
        entry = dict(raw)
        owned: set[Path] = set()
        _flatten(entry.get("fieldsV1"), (), owned)
        owned = {p for p in owned if not any(_related(p, c) for c in changed)}
        owned = {p for p in owned if not any(p[: len(r)] == r for r in removed)}
        is_mine = (
            entry.get("manager") == manager
            and entry.get("operation") == "Update"
            and entry.get("subresource") == subresource
        )
        if is_mine:
            mine = entry
            owned |= changed
            if changed:
                entry["time"] = now
                entry["apiVersion"] = api_version
        if owned:
            entry["fieldsType"] = "FieldsV1"
            entry["fieldsV1"] = _nest(owned)
            entries.append(entry)
    if mine is None and changed:
        entry = {
            "manager": manager,
            "operation": "Update",
            "apiVersion": api_version,
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": _nest(changed),
        }
        if subresource:
            entry["subresource"] = subresource
        entries.append(entry)
    if entries:
        meta["managedFields"] = entries
    else:
        meta.pop("managedFields", None)
