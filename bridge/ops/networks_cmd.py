"""``oicp-bridge networks push [--dry-run]``: send the EVSE networks' group assignments now.

Assignments go through the running bridge's one push lane, so a running bridge is asked
through its API (``POST /api/v2/commands/networks/push``, token as for ``fullload``). Without a
running bridge, ``--dry-run`` reads the state database and prints what would be sent; sending
needs the bridge (it sends every change by itself once it runs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any

import httpx

from bridge import COMMAND
from bridge.config import Settings
from bridge.errors import EXIT_FAILED, EXIT_OK
from bridge.ops.remote import TOKEN_ENV, read_token, running_api


def push(
    settings: Settings,
    *,
    dry_run: bool,
    token_file: Path | None = None,
    ca: Path | None = None,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> int:
    url = running_api(settings.state.database)
    token = read_token(token_file)
    if url is None or (dry_run and token is None and not settings.state.postgres):
        if not dry_run:
            print(f"{COMMAND}: no bridge runs on {settings.state.database}: network assignments "
                  "are sent by the running bridge's push lane (and sent by it on every change); "
                  "start it with `oicp-bridge run`", file=err)  # fmt: skip
            return EXIT_FAILED
        print(json.dumps(_bodies(settings), indent=2, ensure_ascii=False), file=out)
        return EXIT_OK
    if not url:
        print(f"{COMMAND}: a bridge is running on this state database without its API "
              "(ops.enabled: false): enable the ops port", file=err)  # fmt: skip
        return EXIT_FAILED
    if token is None:
        print(f"{COMMAND}: a bridge is running ({url}): set {TOKEN_ENV} (or --token-file) to an "
              "API token with scope write (read is enough for --dry-run)", file=err)  # fmt: skip
        return EXIT_FAILED
    endpoint = f"{url}/api/v2/commands/networks/push"
    params = {"dry_run": "true"} if dry_run else {"wait": "60"}
    verify: Any = str(ca) if ca is not None else True
    try:
        response = httpx.post(endpoint, params=params, timeout=90, verify=verify,
                              headers={"Authorization": f"Token {token}"})  # fmt: skip
        answer = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        print(f"{COMMAND}: cannot reach the running bridge's API at {endpoint}: {exc}", file=err)
        return EXIT_FAILED
    if response.status_code != 200 or answer.get("status_code") != 1000:
        code, message = answer.get("status_code"), answer.get("status_message")
        print(f"{COMMAND}: the bridge refused (HTTP {response.status_code}, {code}): {message}",
              file=err)  # fmt: skip
        return EXIT_FAILED
    networks = answer["data"]["networks"]
    if dry_run:
        print(json.dumps([n["body"] for n in networks if n["body"] is not None], indent=2,
                         ensure_ascii=False), file=out)  # fmt: skip
        return EXIT_OK
    failed = False
    for n in networks:
        line = f"{n['network']}: {n['state']}"
        if n["held"]:
            line += f"; held until the hub knows them: {', '.join(n['held'])}"
        if n["unassigned"]:
            line += f"; in no group (priced at zero): {', '.join(n['unassigned'])}"
        if n["last_error"]:
            line += f"; the hub refused: {n['last_error']}"
            failed = True
        print(line, file=out)
    return EXIT_FAILED if failed else EXIT_OK


def _bodies(settings: Settings) -> list[dict[str, Any]]:
    """What the bridge would send now, from the state database (read only)."""
    from bridge.app import Bridge

    bridge = Bridge(settings)
    bridge.load_state()
    try:
        found = [bridge.networks.body(name) for name in bridge.catalog.ids("network")]
        return [body for body in found if body is not None]
    finally:
        bridge.store.close_unwritten()
