"""The CLI talking to a running bridge through its API (e.g. ``oicp-bridge fullload``).

A running bridge holds the state database's lock and leaves its API's URL beside the database
(``<database>.api``). The token comes from ``BRIDGE_API_TOKEN`` or ``--token-file``, never from
the command line, where other users could read it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO, Any

import httpx

from bridge import COMMAND
from bridge.errors import EXIT_FAILED, EXIT_OK

TOKEN_ENV = "BRIDGE_API_TOKEN"


def running_api(database: Path) -> str | None:
    """The API URL of the bridge running on ``database``; None if none runs there."""
    from bridge.store.local import DatabaseLock, api_url_file

    if not DatabaseLock(database).held_elsewhere():
        return None
    try:
        return api_url_file(database).read_text(encoding="utf-8").strip() or None
    except OSError:
        return ""  # running, but without an API (ops.enabled: false)


def read_token(token_file: Path | None) -> str | None:
    if token_file is not None:
        return token_file.read_text(encoding="utf-8").strip() or None
    return os.environ.get(TOKEN_ENV) or None


def full_load(
    url: str,
    token: str | None,
    *,
    dry_run: bool,
    data: bool = False,
    ca: Path | None = None,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> int:
    """Ask the running bridge for a fullLoad (or its body); print the outcome."""
    import json

    if not url:
        print(f"{COMMAND}: a bridge is running on this state database without its API "
              "(ops.enabled: false): enable the ops port, or stop it and run this again",
              file=err)  # fmt: skip
        return EXIT_FAILED
    if token is None:
        print(f"{COMMAND}: a bridge is running ({url}): set {TOKEN_ENV} (or --token-file) to an "
              "API token with scope write (read is enough for --dry-run) so this command can "
              "ask it; see `oicp-bridge api-token`", file=err)  # fmt: skip
        return EXIT_FAILED
    endpoint = f"{url}/api/v2/commands/fullload"
    params = {"dry_run": "true"} if dry_run else {"wait": "60"}
    if data:
        params["data"] = "true"
    what = "EVSE data" if data else "EVSE status"
    verify: Any = str(ca) if ca is not None else True
    try:
        response = httpx.post(endpoint, params=params, timeout=90, verify=verify,
                              headers={"Authorization": f"Token {token}"})  # fmt: skip
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        print(f"{COMMAND}: cannot reach the running bridge's API at {endpoint}: {exc}; check that "
              "it runs and api.port / ops.port", file=err)  # fmt: skip
        return EXIT_FAILED
    if response.status_code != 200 or body.get("status_code") != 1000:
        print(f"{COMMAND}: the bridge refused the fullLoad (HTTP {response.status_code}, "
              f"{body.get('status_code')}): {body.get('status_message')}", file=err)  # fmt: skip
        return EXIT_FAILED
    answer = body["data"]
    if dry_run:
        print(json.dumps(answer["body"], indent=2), file=out)
    elif answer["state"] == "accepted":
        print(f"fullLoad sent by the running bridge: {answer['records']} {what} records "
              "accepted by the hub", file=out)  # fmt: skip
    else:
        print(f"fullLoad queued in the running bridge: {answer['detail']}", file=out)
    return EXIT_OK
