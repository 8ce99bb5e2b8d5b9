"""The ``oicp-bridge fullload`` command: one status fullLoad now, or its body (``--dry-run``).

``--dry-run`` only reads the state database (as ``status`` does), so it works while the bridge
runs. Sending needs the database to itself: the fullLoad goes through a push worker of this
process, which marks the EVSEs it sent as held by the hub, as the service's daily one does.
Every failure says what failed and what to do next.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import IO

from bridge import COMMAND
from bridge.config import Settings
from bridge.delivery.policy import Verdict, classify
from bridge.errors import EXIT_FAILED, EXIT_OK, DatabaseLockedError, HubError, HubTransportError
from bridge.oicp.models import ActionType, build_status_request
from bridge.status.table import OicpStatus

__all__ = ["dry_run", "records_now", "send"]

_TROUBLESHOOTING = "docs/operations.md#troubleshooting"


def records_now(settings: Settings) -> list[tuple[str, OicpStatus]]:
    """Every shared EVSE with its current status, read from the state database (if any).

    Reading only: no lock and nothing written, so a bridge may be running on the database.
    """
    from bridge.app import Bridge

    bridge = Bridge(settings)
    bridge.load_state()
    try:
        engine = bridge.engine
        # As the push worker sends it: EVSEs whose charger is known (and, with EVSE data,
        # whose data the hub holds).
        may_go = bridge.data.status_may_go if bridge.data is not None else None
        return [(e, engine.status(e)) for e in engine.evse_ids()
                if engine.charge_point_of(e) and (may_go is None or may_go(e))]  # fmt: skip
    finally:
        bridge.store.close_unwritten()


def dry_run(settings: Settings, out: IO[str] = sys.stdout, *, data: bool = False) -> int:
    if data:
        return _dry_run_data(settings, out)
    o = settings.oicp
    body = build_status_request(ActionType.FULL_LOAD, o.operator_id, o.operator_name,
                                records_now(settings))  # fmt: skip
    print(json.dumps(body.model_dump(mode="json", exclude_none=True), indent=2), file=out)
    return EXIT_OK


def _dry_run_data(settings: Settings, out: IO[str]) -> int:
    """The data fullLoad's body as the records stand in the state database and the catalog
    now (rebuilt, as a starting bridge would)."""
    from bridge.api.commands import data_full_load_body
    from bridge.app import Bridge

    bridge = Bridge(settings)
    bridge.load_state()
    try:
        if bridge.data is None:
            print(f"{COMMAND}: EVSE data is not enabled (evse_data.enabled)", file=sys.stderr)
            return EXIT_FAILED
        print(json.dumps(data_full_load_body(bridge.data, settings.oicp), indent=2), file=out)
        return EXIT_OK
    finally:
        bridge.store.close_unwritten()


async def send(
    settings: Settings,
    *,
    wait: float,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
    data: bool = False,
) -> int:
    """Send one fullLoad; keep trying a failing hub for ``wait`` seconds."""
    from bridge.app import Bridge
    from bridge.oicp.client import OicpClient

    bridge = Bridge(settings)
    try:
        bridge.open_state()
    except DatabaseLockedError:
        f = settings.fullload
        daily = (f"It sends one itself daily at {f.time.isoformat('minutes')} {f.timezone}. "
                 if f.enabled else "")  # fmt: skip
        return _fail(err, f"a bridge is running on {settings.state.database}. {daily}To send "
                     "a fullLoad now, stop it and run this command again; to see what it would "
                     f"send: {COMMAND} fullload --dry-run")  # fmt: skip
    client = OicpClient(settings.oicp)
    worker = bridge.make_worker(client)
    if data and bridge.data is None:
        await bridge.store.close()
        bridge.lock.release()
        return _fail(err, "EVSE data is not enabled (evse_data.enabled)")
    done = worker.request_data_full_load() if data else worker.request_full_load()
    runner = asyncio.create_task(worker.run())
    deadline = time.monotonic() + wait
    try:
        while not done.done() and worker.paused_reason is None:
            if time.monotonic() >= deadline:
                break
            await asyncio.wait({done}, timeout=min(0.1, max(0.0, deadline - time.monotonic())))
        if done.done():
            try:
                count = done.result()
            except HubError as exc:
                return _fail(err, _refused(exc), headline="fullLoad refused by the hub")
            what = "EVSE data" if data else "EVSE status"
            print(f"fullLoad sent: {count} {what} records accepted by "
                  f"{settings.oicp.base_url}", file=out)  # fmt: skip
            return EXIT_OK
        return _fail(err, _not_sent(settings, bridge.hub.last_error, worker.paused_reason, wait))
    finally:
        worker.stop()
        await runner
        if done.done() and not done.cancelled():
            done.exception()  # retrieved: the worker fails what is still waiting when it stops
        await client.aclose()
        # A fullLoad given up on may still be applied: the bridge started next waits for it.
        bridge.store.put_meta("hub_settles_at", str(worker.unsettled_until))
        await bridge.store.close()
        bridge.lock.release()


def _fail(err: IO[str], message: str, *, headline: str = "fullLoad not sent") -> int:
    print(f"{COMMAND}: {headline}: {message}", file=err)
    return EXIT_FAILED


def _refused(exc: HubError) -> str:
    """The hub refused this fullLoad's body (a PARK answer): say what to fix."""
    hint = {
        "018": "an EvseID that does not belong to oicp.operator_id: fix the registry "
        f"({COMMAND} check-config checks the prefixes) or the sub-operator set-up at Hubject",
    }.get(exc.code or "", f"see {_TROUBLESHOOTING}")
    return f"{exc}. Fix {hint}, then run this command again."


def _not_sent(settings: Settings, error: HubError | None, paused: str | None, wait: float) -> str:
    hub = settings.oicp.base_url
    if paused is not None:  # retrying on the same set-up cannot help: say so at once
        return (
            f"{paused}. The hub at {hub} refuses the bridge's set-up: check the client "
            f"certificate ({COMMAND} check-config), that it was issued for "
            f"{settings.oicp.operator_id}, that oicp.base_url is the environment of your "
            f"Hubject account, and that Hubject allow-lists this host's address "
            f"({_TROUBLESHOOTING}); then run this command again."
        )
    if error is None:
        return (
            f"no answer from the hub at {hub} within {wait:.0f} s. Check that it is reachable "
            "from here, then run this command again (--wait to wait longer)."
        )
    if isinstance(error, HubTransportError):
        text = str(error)
        tls = "TLS" in text or "closed by hub" in text  # a refused client certificate looks so
        check = (
            f"the certificate files ({COMMAND} check-config) and oicp.ca_bundle"
            if tls
            else "oicp.base_url, DNS and the firewall"
        )
        return (
            f"the hub at {hub} could not be reached within {wait:.0f} s: {text}. Check "
            f"{check}, then run this command again."
        )
    retry = classify(error, ActionType.FULL_LOAD.value) is Verdict.RETRY
    return (
        f"the hub at {hub} kept failing for {wait:.0f} s; the last answer: {error}. "
        + ("This is usually passing: run this command again later (--wait to keep trying "
           "longer)." if retry else f"See {_TROUBLESHOOTING}.")
    )  # fmt: skip
