"""The ``oicp-bridge`` command (also ``python -m bridge``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import structlog

from bridge import COMMAND, __version__
from bridge.config import Settings, load_settings
from bridge.errors import EXIT_FAILED, BridgeError, ConfigError

log = structlog.get_logger("bridge.cli")

_EPILOG = """\
examples:
  oicp-bridge check-config -c /etc/bridge/bridge.yaml   validate before (re)starting
  oicp-bridge run -c /etc/bridge/bridge.yaml            the service (the container's command)
  oicp-bridge status -c /etc/bridge/bridge.yaml --pending
  oicp-bridge fullload --dry-run -c /etc/bridge/bridge.yaml
  oicp-bridge data-quality --fail-under 80 -c /etc/bridge/bridge.yaml

Every setting can be overridden by an environment variable BRIDGE_<SECTION>__<SETTING>,
e.g. BRIDGE_OICP__BASE_URL. Exit status: 0 ok, 1 failed, 2 configuration error.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=COMMAND,
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
        description="Validate what `oicp-bridge run` would load (file + environment), the charger "
        "registry and the certificate files, and print a summary. Exit status 2 on problems.",
    ))  # fmt: skip
    st = with_config(sub.add_parser(
        "status",
        help="print a table of every EVSE from the state database",
        description="Every EVSE with its OCPP and OICP status, what the hub acknowledged, "
        "whether a push is pending and the last push outcome, read from the state database "
        "(safe while the bridge runs).",
    ))  # fmt: skip
    st.add_argument(
        "--status", metavar="OICP_STATUS[,...]", type=_oicp_statuses,
        help="only EVSEs with one of these OICP statuses (Available, Occupied, Reserved, "
        "OutOfService, Unknown; any case)",
    )  # fmt: skip
    st.add_argument("--pending", action="store_true", help="only EVSEs with a pending push")
    st.add_argument("--json", action="store_true", help="JSON instead of a table")
    fl = with_config(sub.add_parser(
        "fullload",
        help="send a fullLoad of every EVSE now",
        description="Send one eRoamingPushEvseStatus fullLoad with every shared EVSE and its "
        "current status. When a bridge runs on the state database it is asked through its API "
        "(token in BRIDGE_API_TOKEN or --token-file) and sends it between two pushes; "
        "otherwise this process sends it and waits for the hub's answer. --dry-run works any "
        "time.",
    ))  # fmt: skip
    fl.add_argument(
        "--dry-run", action="store_true",
        help="print the body instead of sending (reads the state database, or asks the running "
        "bridge when a token is given)",
    )  # fmt: skip
    fl.add_argument(
        "--wait", type=float, default=60.0, metavar="SECONDS",
        help="keep trying a hub that fails or cannot be reached this long (default: %(default)s)",
    )  # fmt: skip
    fl.add_argument(
        "--data", action="store_true",
        help="the EVSE data fullLoad (eRoamingPushEvseData: every valid record in one request) "
        "instead of the status one",
    )  # fmt: skip
    fl.add_argument("--token-file", type=Path, help="file with the API token (running bridge)")
    fl.add_argument("--api-ca", type=Path, help="CA bundle that verifies an https API")
    dq = with_config(sub.add_parser(
        "data-quality",
        help="report the EVSE data's quality: missing fields, inconsistencies, scores",
        description="Per EVSE of the catalog the fields the hub's EVSE Data Score counts that "
        "are missing, the consistency findings (power, voltage, plugs, coordinates, address) and "
        "a score, then the operator's summary; read from the state database (safe while the "
        "bridge runs). Exit status 0 even with findings, unless --fail-under is given.",
    ))  # fmt: skip
    dq.add_argument("--json", action="store_true", help="JSON instead of a table")
    dq.add_argument(
        "--fail-under", type=float, metavar="SCORE",
        help="exit status 1 when the mean score (0-100) is below SCORE",
    )  # fmt: skip
    nw = sub.add_parser("networks", help="EVSE networks: send the group assignments now")
    nw_sub = nw.add_subparsers(dest="networks_command", required=True, metavar="COMMAND")
    np_ = with_config(nw_sub.add_parser(
        "push",
        help="send every EVSE network's due group assignment now (or print it)",
        description="Ask the running bridge to send the EVSE networks' group assignments "
        "(eRoamingEVSEAssignment) now through its push lane, forgetting earlier refusals "
        "(token in BRIDGE_API_TOKEN or --token-file). --dry-run prints the bodies; without a "
        "running bridge it reads the state database.",
    ))  # fmt: skip
    np_.add_argument("--dry-run", action="store_true", help="print the bodies, send nothing")
    np_.add_argument("--token-file", type=Path, help="file with the API token (running bridge)")
    np_.add_argument("--api-ca", type=Path, help="CA bundle that verifies an https API")
    mg = with_config(sub.add_parser(
        "migrate",
        help="bring the state database to this bridge's schema (or --check it)",
        description="Apply the schema migrations this bridge needs to the state database "
        "(SQLite or PostgreSQL); a start does the same by itself. --check only tells: exit "
        "status 0 when current, 1 when behind or made by a newer bridge.",
    ))  # fmt: skip
    mg.add_argument("--check", action="store_true", help="only tell whether it is current")
    cat = sub.add_parser("catalog", help="export or import the charge-station catalog")
    cat_sub = cat.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    with_config(cat_sub.add_parser("export", help="print the catalog as JSON"))
    ci = with_config(cat_sub.add_parser(
        "import", help="import a catalog JSON file (all or nothing)",
        description="Validate every object, print what changes, apply all in one transaction "
        "(the bridge must be stopped; --dry-run works while it runs).",
    ))  # fmt: skip
    ci.add_argument("file", type=Path, help="JSON as written by `catalog export`")
    ci.add_argument("--dry-run", action="store_true", help="only print what would change")
    at = sub.add_parser(
        "api-token",
        help="make a new API token and print it with its hash",
        description="Print a new random API token (give it to the client) and the "
        "configuration entry with its hash (for api.tokens; the token itself is never stored).",
    )
    at.add_argument("--name", default="client", help="who holds it (logged with each write)")
    at.add_argument("--scope", choices=("read", "write"), default="read")
    hs = sub.add_parser("hub-sim", help="run the bundled OICP hub simulator (development)")
    hs.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    hs.add_argument("--port", type=int, default=9501, help="listen port (default: %(default)s)")
    hs.add_argument("--cert", type=Path, help="server certificate (PEM) to serve https")
    hs.add_argument("--key", type=Path, help="private key of --cert")
    hs.add_argument("--client-ca", type=Path, help="require client certificates from this CA")
    hs.add_argument(
        "--state-file", type=Path,
        help="keep the records the simulator holds in this JSON file across restarts",
    )  # fmt: skip
    cs = sub.add_parser(
        "csms-sim",
        help="run a small simulated CSMS to put behind the bridge in proxy mode (development)",
        description="A central system built on the `ocpp` package for trying proxy mode: it "
        "answers boot, status, authorization and transaction messages (docs/proxy.md).",
    )
    cs.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    cs.add_argument("--port", type=int, default=9200, help="listen port (default: %(default)s)")
    cs.add_argument(
        "--password", action="append", default=[], metavar="ID=PASSWORD",
        help="require Basic auth from this charge point (repeatable; others need none)",
    )  # fmt: skip
    cs.add_argument("--heartbeat-interval", type=int, default=60, help="seconds (default: 60)")
    cs.add_argument(
        "--remote-start-after", type=float, metavar="SECONDS",
        help="send each charger a RemoteStartTransaction / RequestStartTransaction this long "
        "after its BootNotification",
    )  # fmt: skip
    from bridge.passwords import DEFAULT_COST, MAX_COST, MIN_COST, MIN_PASSWORD_LENGTH

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


def _oicp_statuses(text: str) -> frozenset[str]:
    from bridge.ops.status_cmd import parse_oicp_statuses

    try:
        return parse_oicp_statuses(text)
    except ValueError as exc:  # argparse shows only this type's message, with exit status 2
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from bridge.ops.logging import setup_logging

    try:
        if args.command == "check-config":
            from bridge.ops.check_config_cmd import check_config

            return check_config(args.config)
        if args.command == "hub-sim":
            setup_logging()
            return asyncio.run(_hub_sim(args))
        if args.command == "csms-sim":
            setup_logging()
            return asyncio.run(_serve_until_signal(_csms_sim(args)))
        if args.command == "hash-password":
            return _hash_password(hex_input=args.hex, cost=args.cost)
        if args.command == "api-token":
            return _api_token(args.name, args.scope)
        settings = load_settings(args.config)
        # Only the service logs to stdout; the other commands print their result there.
        log_stream = None if args.command == "run" else sys.stderr
        setup_logging(settings.log.level, settings.log.format.value, stream=log_stream)
        if args.command == "run":
            from bridge import eventloop

            return eventloop.run(
                _run(settings),
                settings.runtime.event_loop,
                standard_needed=eventloop.standard_loop_needed(settings),
            )
        if args.command == "migrate":
            from bridge.ops import migrate_cmd

            return migrate_cmd.run(settings, check=args.check)
        if args.command == "fullload":
            from bridge.ops import fullload, remote

            url = remote.running_api(settings.state.database)
            token = remote.read_token(args.token_file)
            # A running bridge is asked; a preview without a token reads the database.
            if url is not None and (token is not None or not args.dry_run):
                return remote.full_load(url, token, dry_run=args.dry_run, data=args.data,
                                        ca=args.api_ca)  # fmt: skip
            if args.dry_run:
                return fullload.dry_run(settings, data=args.data)
            if settings.state.postgres:
                raise BridgeError(
                    "with a PostgreSQL state database only the replicas' push leader sends to "
                    "the hub: ask the leader's API (POST /api/v2/commands/fullload), or wait "
                    "for the daily fullLoad"
                )
            return asyncio.run(fullload.send(settings, wait=args.wait, data=args.data))
        if args.command == "networks":
            from bridge.ops import networks_cmd

            return networks_cmd.push(settings, dry_run=args.dry_run, token_file=args.token_file,
                                     ca=args.api_ca)  # fmt: skip
        if args.command == "catalog":
            from bridge.ops import catalog_io

            if args.catalog_command == "export":
                return catalog_io.export(settings)
            return catalog_io.import_file(settings, args.file, dry_run=args.dry_run)
        if args.command == "data-quality":
            from bridge.ops.quality import data_quality

            return data_quality(settings, as_json=args.json, fail_under=args.fail_under)
        if args.command == "status":
            from bridge.ops.status_cmd import status

            return status(settings, oicp_statuses=args.status, pending_only=args.pending,
                          as_json=args.json)  # fmt: skip
    except ConfigError as exc:
        from bridge.ops.check_config_cmd import report_config_error

        return report_config_error(exc)
    except BridgeError as exc:
        print(f"{COMMAND}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    raise AssertionError(args.command)


async def _run(settings: Settings) -> int:
    from bridge.app import Bridge
    from bridge.eventloop import tune_gc
    from bridge.ops.limits import log_open_file_limit

    log_open_file_limit(len(settings.chargers), allow_unlisted=settings.ocpp.allow_unlisted)
    bridge = Bridge(settings)
    await bridge.run(on_started=tune_gc)
    return 0


def _api_token(name: str, scope: str) -> int:
    import yaml

    from bridge.api.tokens import hash_token, new_token

    token = new_token()
    print(f"token (give it to {name}; it is not stored anywhere): {token}")
    print("configuration (api.tokens):")
    entry = [{"name": name, "hash": hash_token(token), "scope": scope}]
    print(yaml.safe_dump({"api": {"tokens": entry}}, sort_keys=False).rstrip())
    print("or in the environment (replaces the file's list):")
    print(f"BRIDGE_API__TOKENS='{json.dumps(entry)}'")
    return 0


def _hash_password(*, hex_input: bool, cost: int) -> int:
    import getpass

    from bridge.passwords import hash_password, password_problem

    if sys.stdin.isatty():
        text = getpass.getpass("Charger password: ")
        if getpass.getpass("Again: ") != text:
            print(f"{COMMAND}: the two entries differ; run it again", file=sys.stderr)
            return EXIT_FAILED
    else:
        text = sys.stdin.read().removesuffix("\n").removesuffix("\r")  # only the line end
    secret: bytes = text.encode("utf-8")
    if hex_input:
        try:
            secret = bytes.fromhex(text.strip())
        except ValueError:
            print(f"{COMMAND}: --hex input is not hexadecimal: give the key as hex digits "
                  "(without --hex for a text password)", file=sys.stderr)  # fmt: skip
            return EXIT_FAILED
    if not secret:
        print(f"{COMMAND}: empty password: give it on standard input, e.g. "
              f"`{COMMAND} hash-password < password.txt`", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    problem = password_problem(secret if hex_input else text)
    if problem is not None:
        print(f"{COMMAND}: {problem}", file=sys.stderr)
        return EXIT_FAILED
    print(hash_password(secret, n=1 << cost))
    return 0


async def _hub_sim(args: argparse.Namespace) -> int:
    from bridge.hubsim import run_hub_sim, server_ssl_context
    from bridge.hubsim.statefile import StateFile

    ssl_context = None
    if args.cert:
        ssl_context = server_ssl_context(args.cert, args.key or args.cert, args.client_ca)
    # SIGTERM (``docker stop``) and Ctrl-C end it cleanly with exit status 0.
    loop = asyncio.get_running_loop()
    state_file = StateFile(args.state_file, setting="--state-file") if args.state_file else None
    served = asyncio.create_task(
        run_hub_sim(args.host, args.port, ssl_context, state_file=state_file)
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, served.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await served
    return 0


async def _csms_sim(args: argparse.Namespace) -> None:
    from bridge.devtools.csms_sim import run_csms_sim

    passwords = {}
    for item in args.password:
        cp_id, sep, password = item.partition("=")
        if not sep or not cp_id:
            raise ConfigError("--password", f"{item!r} is not ID=PASSWORD")
        passwords[cp_id] = password
    await run_csms_sim(args.host, args.port, passwords=passwords,
                       heartbeat_interval=args.heartbeat_interval,
                       remote_start_after=args.remote_start_after)  # fmt: skip


async def _serve_until_signal(serving: Coroutine[Any, Any, None]) -> int:
    """Run ``serving`` until SIGTERM or Ctrl-C, then exit with status 0."""
    served = asyncio.create_task(serving)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, served.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await served
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
