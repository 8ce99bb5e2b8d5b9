"""The ``bridge`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from bridge import __version__
from bridge.config import Settings, load_settings
from bridge.errors import BridgeError, ConfigError, HubError

EXIT_CONFIG = 2
EXIT_FAILED = 1

log = structlog.get_logger("bridge.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge",
        description="OCPP 1.6J / 2.0.1 central-system endpoint that pushes every EVSE status "
        "change to the Hubject OICP hub (eRoamingPushEvseStatus).",
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
    fl = with_config(sub.add_parser("fullload", help="send a fullLoad of every EVSE now"))
    fl.add_argument("--dry-run", action="store_true", help="print the body instead of sending")
    hs = sub.add_parser("hub-sim", help="run the bundled OICP hub simulator (development)")
    hs.add_argument("--host", default="127.0.0.1")
    hs.add_argument("--port", type=int, default=9501)
    hs.add_argument("--cert", type=Path, help="server certificate (PEM) to serve https")
    hs.add_argument("--key", type=Path, help="private key of --cert")
    hs.add_argument("--client-ca", type=Path, help="require client certificates from this CA")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from bridge.ops.logging import setup_logging

    try:
        if args.command == "hub-sim":
            setup_logging()
            return asyncio.run(_hub_sim(args))
        settings = load_settings(args.config)
        setup_logging(settings.log.level, settings.log.format.value)
        if args.command == "run":
            return asyncio.run(_run(settings))
        if args.command == "fullload":
            return asyncio.run(_fullload(settings, dry_run=args.dry_run))
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

    await Bridge(settings).run()
    return 0


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
            count = await asyncio.wait_for(done, timeout=settings.oicp.request_timeout * 3)
        except (HubError, TimeoutError) as exc:
            print(f"bridge: fullLoad failed: {exc}", file=sys.stderr)
            return EXIT_FAILED
        finally:
            worker.stop()
            await runner
            await client.aclose()
        print(f"fullLoad sent: {count} EVSE status records accepted by {settings.oicp.base_url}")
        return 0
    finally:
        await bridge.store.close()
        bridge.lock.release()


async def _hub_sim(args: argparse.Namespace) -> int:
    from bridge.hubsim import run_hub_sim, server_ssl_context

    ssl_context = None
    if args.cert:
        ssl_context = server_ssl_context(args.cert, args.key or args.cert, args.client_ca)
    await run_hub_sim(args.host, args.port, ssl_context)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
