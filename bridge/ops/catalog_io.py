"""``oicp-bridge catalog export`` and ``oicp-bridge catalog import [--dry-run]``.

The file is JSON: ``{"locations": [...], "templates": [...], "charge_stations": [...],
"networks": [...]}`` with the
objects as the API reads them (read-only fields are ignored on import; passwords are never
exported, so an imported station keeps the hash stored for it, or takes ``password``).

Import validates every object against the catalog and the others in the file, prints what it
would create and change, and applies all of it in one transaction, or nothing: the first
refusal names the object and the field and nothing is written. It works on the state database
directly, so the bridge must be stopped (``--dry-run`` works while it runs); on a running
bridge use the API's batch endpoints. Objects of the configuration file are left to it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ValidationError

from bridge import COMMAND
from bridge.catalog.catalog import Change, Kind, content
from bridge.catalog.enums import Source
from bridge.catalog.model import LocationBody, StationBody, TemplateBody, utc_now
from bridge.catalog.networks import NetworkBody
from bridge.config import Settings
from bridge.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, CatalogError

SECTIONS: tuple[tuple[str, Kind, type[BaseModel]], ...] = (
    ("locations", "location", LocationBody),
    ("templates", "template", TemplateBody),
    ("charge_stations", "station", StationBody),
    ("networks", "network", NetworkBody),  # last: its EVSEs are the stations'
)


def export(settings: Settings, out: IO[str] = sys.stdout) -> int:
    from bridge.app import Bridge

    bridge = Bridge(settings)
    bridge.load_state()  # reading only: safe while the bridge runs
    try:
        document: dict[str, Any] = {}
        for section, kind, _ in SECTIONS:
            table = bridge.catalog.table(kind)
            items = []
            for object_id in bridge.catalog.ids(kind):
                entry = table[object_id]
                data = entry.body.model_dump(mode="json", exclude_none=True)
                data["source"] = entry.source.value
                items.append(data)
            document[section] = items
        print(json.dumps(document, indent=2, ensure_ascii=False), file=out)
        return EXIT_OK
    finally:
        _close(bridge)


def import_file(
    settings: Settings,
    path: Path,
    *,
    dry_run: bool,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> int:
    from bridge.app import Bridge
    from bridge.passwords import hash_password

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"{COMMAND}: cannot read {path}: {exc}", file=err)
        return EXIT_FAILED
    if not isinstance(document, dict):
        print(f"{COMMAND}: {path}: expected an object with {', '.join(s for s, _, _ in SECTIONS)}",
              file=err)  # fmt: skip
        return EXIT_CONFIG
    unknown = sorted(set(document) - {s for s, _, _ in SECTIONS})
    if unknown:
        print(f"{COMMAND}: {path}: unknown section(s) {', '.join(unknown)}", file=err)
        return EXIT_CONFIG
    bridge = Bridge(settings)
    if dry_run:
        bridge.load_state()
    else:
        if bridge.lock.held_elsewhere():
            print(f"{COMMAND}: a bridge is running on this state database: import through its API "
                  "(POST /api/v2/<collection>/batch) or stop it first; --dry-run works now",
                  file=err)  # fmt: skip
            _close(bridge)
            return EXIT_FAILED
        bridge.open_state()
    try:
        lines, changes, problem = _plan(bridge, document, hash_password)
        if problem is not None:
            print(f"{COMMAND}: {path}: {problem}; nothing was imported", file=err)
            return EXIT_CONFIG
        for line in lines:
            print(line, file=out)
        created = sum(1 for line in lines if line.startswith("  create"))
        changed = sum(1 for line in lines if line.startswith("  change"))
        summary = f"{created} to create, {changed} to change"
        if dry_run:
            print(f"dry run: {summary}; nothing written", file=out)
            return EXIT_OK
        if changes:
            asyncio.run(_commit(bridge, changes))
        print(f"imported: {summary}", file=out)
        return EXIT_OK
    finally:
        if not dry_run:
            bridge.lock.release()
        _close(bridge)


def _plan(
    bridge: Any, document: dict[str, Any], hasher: Any
) -> tuple[list[str], list[Change], str | None]:
    catalog = bridge.catalog
    lines: list[str] = []
    changes: list[Change] = []
    now = utc_now()
    for section, kind, model in SECTIONS:
        items = document.get(section) or []
        if not isinstance(items, list):
            return lines, changes, f"{section}: expected a list"
        for n, item in enumerate(items):
            where = f"{section}[{n}]"
            if not isinstance(item, dict):
                return lines, changes, f"{where}: expected an object"
            raw = dict(item)
            if raw.get("source") == Source.FILE.value:
                lines.append(f"  skip   {kind} {raw.get('id')} (from the configuration file)")
                continue
            raw.pop("source", None)
            try:
                body = model.model_validate(raw)
                before = catalog.table(kind).get(str(body.id))  # type: ignore[attr-defined]
                if kind == "location":
                    planned = catalog.plan_location(body, now=now)
                elif kind == "template":
                    planned = catalog.plan_template(body, now=now)
                elif kind == "network":  # the hub's assignments count as over the API
                    hub = bridge.networks.hub_assigned(str(body.id))  # type: ignore[attr-defined]
                    planned = catalog.plan_network(body, now=now, hub_assigned=hub)
                else:
                    password = raw.get("password")
                    hashed = hasher(password) if isinstance(password, str) else None
                    planned = catalog.plan_station(body, now=now, password_hash=hashed)
            except ValidationError as exc:
                error = exc.errors()[0]
                field = ".".join(str(p) for p in error["loc"])
                return lines, changes, f"{where}.{field}: {error['msg']}"
            except CatalogError as exc:
                return lines, changes, f"{where} ({kind} {raw.get('id')}): {exc}"
            bridge.live.stage(planned)
            changes += planned
            mine = [c for c in planned if c.kind == kind]
            if not mine:
                lines.append(f"  same   {kind} {body.id}")  # type: ignore[attr-defined]
            elif before is None:
                lines.append(f"  create {kind} {body.id}")  # type: ignore[attr-defined]
            else:
                fields = _changed_fields(before.body, mine[0].after.body)
                lines.append(f"  change {kind} {body.id}: {', '.join(fields) or 'password'}")  # type: ignore[attr-defined]
    return lines, changes, None


def _changed_fields(before: BaseModel, after: BaseModel) -> list[str]:
    old, new = content(before), content(after)
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


async def _commit(bridge: Any, changes: list[Change]) -> None:
    await bridge.live.durable(changes, actor="catalog import")
    await bridge.store.close()


def _close(bridge: Any) -> None:
    bridge.store.close_unwritten()


__all__ = ["export", "import_file"]
