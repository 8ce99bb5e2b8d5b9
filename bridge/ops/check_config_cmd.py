"""``oicp-bridge check-config``: validate what ``oicp-bridge run`` would load and summarize it.

Works without a running bridge: settings, registry, certificate files, ports, the state
directory, and from an existing state database the catalog's station owners and network
groups (read only; the command never migrates or writes).
"""

from __future__ import annotations

import os
import resource
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bridge import COMMAND
from bridge.certs import CERT_WARN_DAYS, certificate_days_left
from bridge.config import Settings, load_settings
from bridge.errors import EXIT_CONFIG, EXIT_OK, ConfigError

__all__ = ["Check", "check_config", "check_settings", "report_config_error"]


@dataclass
class Check:
    """Findings about one configuration: problems stop the bridge, warnings do not."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)


def check_config(path: Path | None, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    """Validate the configuration at ``path`` (plus environment); print a summary."""
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        report_config_error(exc, err)
        print(f"{len(exc.problems)} problem(s) found", file=err)
        return EXIT_CONFIG
    check = check_settings(settings)
    print(_summary(settings, path, check), file=out)
    for warning in check.warnings:
        print(f"{COMMAND}: warning: {warning}", file=err)
    for problem in check.problems:
        print(f"{COMMAND}: configuration error: {problem}", file=err)
    if check.problems:
        print(f"{len(check.problems)} problem(s) found", file=err)
        return EXIT_CONFIG
    print("configuration OK", file=out)
    return EXIT_OK


def report_config_error(exc: ConfigError, err: IO[str] = sys.stderr) -> int:
    """Print every problem of ``exc``, one line each naming its setting; the exit status."""
    for field_name, reason in exc.problems:
        print(f"{COMMAND}: configuration error: {field_name}: {reason}", file=err)
    return EXIT_CONFIG


def check_settings(settings: Settings) -> Check:
    """What loading cannot see: files, certificates, ports, the state directory."""
    check = Check()
    o = settings.oicp
    _check_certificate(o.client_cert, o.client_key, check)
    if o.ca_bundle is not None:
        if not o.ca_bundle.is_file():
            check.problems.append(f"oicp.ca_bundle: file {str(o.ca_bundle)!r} not found")
        else:
            try:
                ssl.create_default_context(cafile=str(o.ca_bundle))
            except (OSError, ssl.SSLError) as exc:
                check.problems.append(
                    f"oicp.ca_bundle: {o.ca_bundle} is not a PEM CA bundle: {exc}"
                )
    if o.base_url.startswith("https:") and o.client_cert is None:
        check.warnings.append(
            "oicp.client_cert is not set: Hubject requires a client certificate (mutual TLS) "
            "and answers 017 without one"
        )
    if o.base_url.startswith("http:"):
        check.warnings.append(
            f"oicp.base_url {o.base_url} is plain http: only the bundled hub simulator"
        )
    if settings.hub_sim.embedded:
        check.warnings.append("hub_sim.embedded is on: pushes go to the simulator (development)")
    s = settings
    if s.ops.enabled and s.ops.port and s.ops.port == s.ocpp.port:
        check.problems.append(f"ops.port: {s.ops.port} is also ocpp.port; give them two ports")
    if s.api.tls_cert is not None and not s.api.tls_cert.is_file():
        check.problems.append(f"api.tls_cert: file {str(s.api.tls_cert)!r} not found")
    _check_state_dir(settings.state.database, check)
    _check_catalog_owners(settings, check)
    _check_networks(settings, check)
    _check_ocpp(settings, check)
    _check_upstream(settings, check)
    _check_open_files(len(settings.chargers), check)
    return check


def _check_catalog_owners(settings: Settings, check: Check) -> None:
    """A station of the file that the API created first is refused at start: say it now.

    Reads the catalog directly, only from a database already at this bridge's schema
    (check-config never migrates or writes).
    """
    path = settings.state.database
    if not settings.chargers or not path.is_file():
        return
    found = _read_current(path, "SELECT id FROM catalog_station WHERE source = 'api'")
    if found is None:
        return  # the start reports what is wrong with the database itself
    (rows,) = found
    for (station_id,) in rows:
        if station_id in settings.chargers:
            check.problems.append(
                f"chargers.{station_id}: this charge station was created over the management "
                "API; a station has one owner: remove it from the file"
            )


def _check_networks(settings: Settings, check: Check) -> None:
    """The price-zero guard: an EVSE of a network in none of its groups (read from the state
    database as for the owners above; the running bridge reports the same in its metrics)."""
    from bridge.catalog.model import StationBody
    from bridge.catalog.networks import NetworkBody, unassigned

    path = settings.state.database
    if settings.state.url is not None or not path.is_file():
        return
    found = _read_current(path, "SELECT body FROM catalog_network ORDER BY id",
                          "SELECT id, body FROM catalog_station")  # fmt: skip
    if found is None:
        return
    networks, station_rows = found
    stations = dict(station_rows)
    for (raw,) in networks:
        network = NetworkBody.model_validate_json(raw)
        wanted = {i: _Entry(StationBody.model_validate_json(stations[i]))
                  for i in network.station_ids if i in stations}  # fmt: skip
        loose = unassigned(network, wanted)
        if loose:
            shown = ", ".join(loose[:10]) + (" ..." if len(loose) > 10 else "")
            check.warnings.append(
                f"networks.{network.id}: {len(loose)} EVSE(s) in no group ({shown}): once the "
                "network's service offer is active the hub prices them at zero; assign them "
                f"(PATCH /api/v2/networks/{network.id})"
            )


@dataclass(frozen=True)
class _Entry:
    body: Any


def _api_summary(settings: Settings) -> str:
    a = settings.api
    where = "on the ops port" if a.port is None else (
        f"{'https' if a.tls_cert else 'http'}://{a.host}:{a.port}")  # fmt: skip
    if not a.tokens:
        return f"{where}, no tokens: every /api/ request is answered 401 (oicp-bridge api-token)"
    writers = sum(1 for t in a.tokens if t.scope == "write")
    return f"{where}, {len(a.tokens)} token(s), {writers} with write scope"


def _check_open_files(chargers: int, check: Check) -> None:
    """What this process may open, as ``oicp-bridge run`` would after raising its soft limit."""
    from bridge.ops.limits import files_needed, shortfall

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    check.facts["open files"] = (
        f"{limit} allowed, ~{files_needed(chargers)} needed for {chargers} chargers"
    )
    if (short := shortfall(hard, chargers)) is not None:
        check.warnings.append(f"open files: the hard limit is {hard}, but {short}")


def _check_ocpp(settings: Settings, check: Check) -> None:
    """Load the charger credentials and the OCPP port's TLS files as ``oicp-bridge run`` would."""
    from bridge.ocpp.auth import Authenticator
    from bridge.ocpp.tls import CRL_WARN_HOURS, TlsFiles

    security = settings.ocpp.security
    try:
        mode = Authenticator(security, settings.chargers).client_cert_mode()
        files = TlsFiles(security, mode)
    except ConfigError as exc:
        check.problems.append(str(exc))
        return
    if security.tls_cert is None:
        return
    days = files.server_cert_days_left
    if days is not None:
        check.facts["OCPP certificate"] = f"{security.tls_cert} ({days:.0f} days left)"
        if days < 0:
            check.problems.append(
                f"ocpp.security.tls_cert: {security.tls_cert} expired {-days:.0f} days ago"
            )
        elif days < CERT_WARN_DAYS:
            check.warnings.append(
                f"ocpp.security.tls_cert: {security.tls_cert} expires in {days:.0f} days"
            )
    if files.crl_unused:
        check.warnings.append(
            "ocpp.security.charger_crl is set but no charger uses security profile 3: "
            "it is not used"
        )
    revocations = files.revocations
    if revocations is not None:
        hours = revocations.hours_left()
        when = "no nextUpdate" if hours is None else f"next update in {hours:.0f} h"
        check.facts["charger CRL"] = (
            f"{security.charger_crl} ({len(revocations.crls)} CRL(s), {when})"
        )
        if hours is not None and hours < CRL_WARN_HOURS:
            check.warnings.append(
                f"ocpp.security.charger_crl: a CRL in {security.charger_crl} "
                + ("is past its nextUpdate" if hours < 0 else f"expires in {hours:.0f} h")
                + ": chargers of that CA will be refused until a newer CRL is installed"
            )


def _check_upstream(settings: Settings, check: Check) -> None:
    """Proxy mode: load the CSMS's TLS files and the per-charger passwords as ``bridge run``."""
    from bridge.ocpp.upstream import Upstream

    try:
        upstream = Upstream(settings.ocpp, settings.chargers)
    except ConfigError as exc:
        check.problems.append(str(exc))
        return
    if not upstream.any_proxied():
        return
    check.facts["proxy"] = (
        f"{upstream.template} (default mode {upstream.default_mode}, "
        f"{upstream.count_proxied()} listed chargers proxied, "
        f"credentials {upstream.settings.credentials})"
    )
    if upstream.insecure:
        check.warnings.append(
            f"ocpp.upstream.url {upstream.template} is plain ws:// to another host: charger "
            "credentials and frames cross the network unencrypted"
        )


def _check_certificate(cert: Path | None, key: Path | None, check: Check) -> None:
    if cert is None:
        check.facts["client certificate"] = "none"
        return
    missing = False
    for name, path in (("oicp.client_cert", cert), ("oicp.client_key", key)):
        if path is not None and not path.is_file():
            check.problems.append(f"{name}: file {str(path)!r} not found")
            missing = True
    if missing:
        return

    try:
        days = certificate_days_left(cert)
    except (OSError, ValueError) as exc:
        check.problems.append(f"oicp.client_cert: {cert} is not a PEM certificate: {exc}")
        return
    try:
        ssl.create_default_context().load_cert_chain(str(cert), str(key) if key else None)
    except (OSError, ssl.SSLError) as exc:
        field_name = "oicp.client_key" if key is not None else "oicp.client_cert"
        check.problems.append(
            f"{field_name}: cannot use {cert}"
            + (f" with key {key}" if key else " (no private key inside; set oicp.client_key)")
            + f": {exc}"
        )
        return
    if days < 0:
        check.problems.append(f"oicp.client_cert: {cert} expired {-days:.0f} days ago")
    else:
        check.facts["client certificate"] = f"{cert} ({days:.0f} days left)"
        if days < CERT_WARN_DAYS:
            check.warnings.append(
                f"oicp.client_cert: {cert} expires in {days:.0f} days; renew it with Hubject"
            )


def _check_state_dir(database: Path, check: Check) -> None:
    if database.exists():
        if not os.access(database, os.R_OK | os.W_OK):
            check.problems.append(f"state.database: {database} is not readable and writable")
        return
    parent = database.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        check.problems.append(f"state.database: cannot create {database}: {parent} is not writable")


def _summary(settings: Settings, path: Path | None, check: Check) -> str:
    s = settings
    name = f" ({s.oicp.operator_name})" if s.oicp.operator_name else ""
    evses = sum(len(c.evses) for c in s.chargers.values())
    rows = [
        ("configuration", f"{path or '(no file)'} + BRIDGE_* environment"),
        ("operator", f"{s.oicp.operator_id}{name}"),
        ("hub", s.oicp.base_url),
        ("client certificate", check.facts.get("client certificate", "-")),
        ("OCPP endpoint", f"{'wss' if s.ocpp.security.tls_cert else 'ws'}://{s.ocpp.host}:"
                          f"{s.ocpp.port}/ocpp/{{chargePointId}}"),
        ("security profile", str(s.ocpp.security.profile)
         + (" (some chargers differ)" if any(c.security_profile is not None
                                              for c in s.chargers.values()) else "")),
        ("ops port", f"http://{s.ops.host}:{s.ops.port}" if s.ops.enabled else "disabled"),
        ("API", _api_summary(settings)),
        ("state database", s.state.where),
        (
            "fullLoad",
            f"daily at {s.fullload.time.isoformat('minutes')} {s.fullload.timezone}"
            if s.fullload.enabled
            else "disabled",
        ),
        ("registry", f"{len(s.chargers)} chargers, {evses} EVSEs"
         + (" (+ unlisted via evse_id_template)" if s.ocpp.allow_unlisted else "")),
    ]  # fmt: skip
    rows += [
        (k, check.facts[k])
        for k in ("OCPP certificate", "charger CRL", "open files")
        if k in check.facts
    ]
    width = max(len(k) for k, _ in rows) + 1
    lines = [f"{k + ':':<{width}} {v}" for k, v in rows]
    for cp_id, charger in sorted(s.chargers.items()):
        evse_list = "  ".join(f"{k}→{v}" for k, v in sorted(charger.evses.items()))
        lines.append(f"  {cp_id}: {evse_list}")
    return "\n".join(lines)


def _read_current(path: Path, *queries: str) -> list[list[Any]] | None:
    """The rows of ``queries`` from the SQLite state database, read-only; None when it cannot
    be read or is not at the current schema (the start reports and migrates that)."""
    import sqlite3

    from bridge.store.migrate import HEAD, current_revision

    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            if current_revision(db) != HEAD:
                return None
            return [db.execute(query).fetchall() for query in queries]
        finally:
            db.close()
    except sqlite3.Error:
        return None
