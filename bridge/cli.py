"""The ``bridge`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from bridge import __version__
from bridge.config import Settings, load_settings
from bridge.errors import EXIT_CONFIG, EXIT_FAILED, BridgeError, ConfigError, HubError

log = structlog.get_logger("bridge.cli")

_EPILOG = """\
examples:
  bridge check-config -c /etc/bridge/bridge.yaml   validate before (re)starting
  bridge run -c /etc/bridge/bridge.yaml            the service (the container's command)
  bridge status -c /etc/bridge/bridge.yaml --pending
  bridge fullload --dry-run -c /etc/bridge/bridge.yaml

Every setting can be overridden by an environment variable BRIDGE_<SECTION>__<SETTING>,
e.g. BRIDGE_OICP__BASE_URL. Exit status: 0 ok, 1 failed, 2 configuration error.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge",
        description="OCPP 1.6J / 2.0.1 central-system endpoint that pushes every EVSE status\n"
        "change to the Hubject OICP hub (eRoamingPushEvseStatus).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config", "-c", type=Path, default=None,
            help="YAML configuration file; BRIDGE_* environment variables override it",
        )  # fmt: skip
        return p

    with_config(sub.add_parser("run", help="run the bridge (OCPP endpoint + pusher)"))
    with_config(sub.add_parser(
        "check-config",
        help="validate configuration, registry and certificates",
        description="Validate what `bridge run` would load (file + environment), the charger "
        "registry and the certificate files, and print a summary. Exit status 2 on problems.",
    ))  # fmt: skip
    st = with_config(sub.add_parser(
        "status",
        help="print a table of every EVSE from the state database",
        description="Every EVSE with its OCPP and OICP status, what the hub acknowledged, "
        "whether a push is pending and the last push outcome, read from the state database "
        "(safe while the bridge runs).",
    ))  # fmt: skip
    st.add_argument("--status", metavar="OICP_STATUS", help="only EVSEs with this OICP status")
    st.add_argument("--pending", action="store_true", help="only EVSEs with a pending push")
    st.add_argument("--json", action="store_true", help="JSON instead of a table")
    fl = with_config(sub.add_parser("fullload", help="send a fullLoad of every EVSE now"))
    fl.add_argument("--dry-run", action="store_true", help="print the body instead of sending")
    hs = sub.add_parser("hub-sim", help="run the bundled OICP hub simulator (development)")
    hs.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    hs.add_argument("--port", type=int, default=9501, help="listen port (default: %(default)s)")
    hs.add_argument("--cert", type=Path, help="server certificate (PEM) to serve https")
    hs.add_argument("--key", type=Path, help="private key of --cert")
    hs.add_argument("--client-ca", type=Path, help="require client certificates from this CA")
    from bridge.ocpp.auth import DEFAULT_COST, MAX_COST, MIN_COST, MIN_PASSWORD_LENGTH

    hp = sub.add_parser(
        "hash-password",
        help="print the hash of a charger's Basic-auth password (for password_hash)",
        description="Read a charger's password from standard input (or a prompt on a terminal) "
        "and print its salted scrypt hash for chargers.<ID>.password_hash. The password is never "
        "taken from the command line, where other users and the shell history could see it. "
        f"Charger passwords are random machine secrets of at least {MIN_PASSWORD_LENGTH} "
        "characters (OCPP); shorter ones are refused.",
    )
    hp.add_argument(
        "--hex", action="store_true",
        help="the input is hex (an OCPP 1.6 AuthorizationKey sent as raw bytes)",
    )  # fmt: skip
    hp.add_argument(
        "--cost", type=int, default=DEFAULT_COST, choices=range(MIN_COST, MAX_COST + 1),
        metavar=f"{MIN_COST}-{MAX_COST}",
        help="scrypt cost as log2(N) (default: %(default)s: a few ms per check; each step doubles "
        "the time every charger's first login after a start costs)",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from bridge.ops.logging import setup_logging

    try:
        if args.command == "check-config":
            from bridge.ops.commands import check_config

            return check_config(args.config)
        if args.command == "hub-sim":
            setup_logging()
            return asyncio.run(_hub_sim(args))
        if args.command == "hash-password":
            return _hash_password(hex_input=args.hex, cost=args.cost)
        settings = load_settings(args.config)
        # Only the service logs to stdout; the other commands print their result there.
        log_stream = None if args.command == "run" else sys.stderr
        setup_logging(settings.log.level, settings.log.format.value, stream=log_stream)
        if args.command == "run":
            return asyncio.run(_run(settings))
        if args.command == "fullload":
            return asyncio.run(_fullload(settings, dry_run=args.dry_run))
        if args.command == "status":
            from bridge.ops.commands import status

            return status(settings, oicp_status=args.status, pending_only=args.pending,
                          as_json=args.json)  # fmt: skip
    except ConfigError as exc:
        print(f"bridge: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except BridgeError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    raise AssertionError(args.command)


async def _run(settings: Settings) -> int:
    from bridge.app import Bridge
    from bridge.ops.limits import log_open_file_limit

    log_open_file_limit(len(settings.chargers), allow_unlisted=settings.ocpp.allow_unlisted)
    bridge = Bridge(settings)
    await bridge.run(on_started=_tune_gc)
    return 0


def _tune_gc() -> None:
    """Keep the cyclic GC off the long-lived start-up objects and collect young ones less often.

    With thousands of connections the default thresholds cause ~160 ms stop-the-world
    generation-2 collections every few seconds; freezing what exists after start-up and a
    larger generation-0 threshold cut GC time by ~80 % (bench/RESULTS.md, E5).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


async def _fullload(settings: Settings, *, dry_run: bool) -> int:
    """Send one fullLoad now, from this process (the bridge must not be running on the DB)."""
    from bridge.app import Bridge
    from bridge.oicp.client import OicpClient
    from bridge.oicp.models import ActionType, build_status_request

    bridge = Bridge(settings)
    bridge.open_state()
    try:
        if dry_run:
            records = [(e, bridge.engine.status(e)) for e in bridge.engine.evse_ids()]
            body = build_status_request(
                ActionType.FULL_LOAD, settings.oicp.operator_id, settings.oicp.operator_name,
                records,
            )  # fmt: skip
            print(json.dumps(body.model_dump(mode="json", exclude_none=True), indent=2))
            return 0
        client = OicpClient(settings.oicp)
        worker = bridge.make_worker(client)
        done = worker.request_full_load()
        runner = asyncio.create_task(worker.run())
        try:
            count = await asyncio.wait_for(done, timeout=settings.fullload.request_timeout * 3)
        except (HubError, TimeoutError) as exc:
            print(f"bridge: fullLoad failed: {exc}", file=sys.stderr)
            return EXIT_FAILED
        finally:
            worker.stop()
            await runner
            await client.aclose()
            # A fullLoad given up on may still be applied: the bridge started next waits.
            bridge.store.put_meta("hub_settles_at", str(worker.unsettled_until))
        print(f"fullLoad sent: {count} EVSE status records accepted by {settings.oicp.base_url}")
        return 0
    finally:
        await bridge.store.close()
        bridge.lock.release()


def _hash_password(*, hex_input: bool, cost: int) -> int:
    import getpass

    from bridge.ocpp.auth import hash_password, password_problem

    if sys.stdin.isatty():
        text = getpass.getpass("Charger password: ")
        if getpass.getpass("Again: ") != text:
            print("bridge: the two entries differ", file=sys.stderr)
            return EXIT_FAILED
    else:
        text = sys.stdin.read().removesuffix("\n").removesuffix("\r")  # only the line end
    secret: bytes = text.encode("utf-8")
    if hex_input:
        try:
            secret = bytes.fromhex(text.strip())
        except ValueError:
            print("bridge: --hex input is not hexadecimal", file=sys.stderr)
            return EXIT_FAILED
    if not secret:
        print("bridge: empty password", file=sys.stderr)
        return EXIT_FAILED
    problem = password_problem(secret if hex_input else text)
    if problem is not None:
        print(f"bridge: {problem}", file=sys.stderr)
        return EXIT_FAILED
    print(hash_password(secret, n=1 << cost))
    return 0


async def _hub_sim(args: argparse.Namespace) -> int:
    from bridge.hubsim import run_hub_sim, server_ssl_context

    ssl_context = None
    if args.cert:
        ssl_context = server_ssl_context(args.cert, args.key or args.cert, args.client_ca)
    # SIGTERM (``docker stop``) and Ctrl-C end it cleanly with exit status 0.
    loop = asyncio.get_running_loop()
    served = asyncio.create_task(run_hub_sim(args.host, args.port, ssl_context))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, served.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await served
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
