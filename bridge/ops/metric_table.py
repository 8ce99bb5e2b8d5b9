"""The table of every metric the bridge exports: name, kind, labels and help text.

``METRICS`` is the single list: the counters of ``bridge.ops.metrics`` and the scrape-time
collectors of ``bridge.ops.live_metrics`` are built from it, and the metrics table in
docs/operations.md is generated from it (``bridge.ops.docs``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BY_NAME", "METRICS", "MetricDoc"]


@dataclass(frozen=True, slots=True)
class MetricDoc:
    name: str  # as exposed (counters with their _total suffix)
    kind: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    help: str


METRICS: tuple[MetricDoc, ...] = (
    MetricDoc("bridge_info", "gauge", ("version",), "Always 1; the bridge version as a label."),
    MetricDoc(
        "bridge_chargers_connected", "gauge", ("protocol",),
        "Chargers with an open websocket, by OCPP version (1.6, 2.0.1).",
    ),
    MetricDoc(
        "bridge_chargers_offline", "gauge", (),
        "Chargers gone longer than ocpp.offline_grace (their EVSEs show ocpp.offline_status).",
    ),
    MetricDoc(
        "bridge_status_notifications_total", "counter", ("protocol", "ocpp_status"),
        "Connector status reports received (StatusNotification, NotifyEvent AvailabilityState).",
    ),
    MetricDoc(
        "bridge_evses", "gauge", ("oicp_status",),
        "EVSEs by their current OICP status (what the bridge wants the hub to show).",
    ),
    MetricDoc(
        "bridge_pushes_total", "counter", ("action", "outcome", "code"),
        "Requests to the hub by action (insert, update, delete, fullLoad, network: an EVSE "
        "group assignment; EVSE data: data_insert, data_update, data_delete, data_fullLoad), "
        "outcome (ok; "
        "retry: the hub failed; defer: refused for now, others go first; flip, absent, pause, "
        "park; refused: a fullLoad the hub does not take) and OICP code (or http_NNN / "
        "transport without one).",
    ),
    MetricDoc(
        "bridge_push_duration_seconds", "histogram", ("action",),
        "Duration of push requests to the hub, successful or not.",
    ),
    MetricDoc(
        "bridge_replica_role", "gauge", ("role",),
        "1 for this process's role: single (SQLite, one process), leader (the replica that "
        "pushes to the hub) or follower (takes chargers, never calls the hub).",
    ),
    MetricDoc(
        "bridge_leader_elections_total", "counter", (),
        "Times this replica took the push lease (at start, or after another leader).",
    ),
    MetricDoc(
        "bridge_leader_failovers_total", "counter", (),
        "Times this replica took the push lease over from another replica whose lease had "
        "expired (a crash or a cut from the database; a clean stop hands it on without one).",
    ),
    MetricDoc(
        "bridge_push_pending", "gauge", (),
        "EVSEs whose current status the hub has not acknowledged yet (the outbox depth).",
    ),
    MetricDoc(
        "bridge_push_oldest_pending_age_seconds", "gauge", (),
        "Age of the oldest pending push (0 when nothing is pending).",
    ),
    MetricDoc(
        "bridge_network_evses_without_group", "gauge", ("network",),
        "EVSEs of an EVSE network that are in none of its groups: once the network's service "
        "offer is active the hub prices them at zero. Alert on anything above 0.",
    ),
    MetricDoc(
        "bridge_push_paused", "gauge", (),
        "1 while pushes are paused because the hub reports a configuration error (017, 210, "
        "300, HTTP 401/403), else 0.",
    ),
    MetricDoc(
        "bridge_hub_reachable", "gauge", (),
        "1 if the last request to the hub got an HTTP answer (even a refusal), 0 if it did not "
        "(connection, TLS, timeout); absent before the first request since the start.",
    ),
    MetricDoc(
        "bridge_hub_consecutive_failures", "gauge", (),
        "Requests to the hub that failed in a row (unreachable, refused or an error answer); 0 "
        "after a success.",
    ),
    MetricDoc(
        "bridge_evses_parked", "gauge", (),
        "EVSEs set aside after a refusal (e.g. 018) until their status changes or a fullLoad.",
    ),
    MetricDoc(
        "bridge_fullload_last_success_timestamp_seconds", "gauge", (),
        "Unix time of the last fullLoad the hub accepted (0: none yet).",
    ),
    MetricDoc(
        "bridge_evse_data_pending", "gauge", (),
        "EVSEs whose data record (eRoamingPushEvseData) the hub has not acknowledged yet, "
        "deletes included.",
    ),
    MetricDoc(
        "bridge_evse_data_invalid", "gauge", (),
        "Shared EVSEs whose data record fails the OICP schema (never pushed; their status is "
        "held; the field errors are in the station's hub_data and the evse_data.invalid log).",
    ),
    MetricDoc(
        "bridge_evse_data_parked", "gauge", (),
        "EVSE data records the hub refused (e.g. HTTP 400 naming their fields), set aside "
        "until they change or a data fullLoad.",
    ),
    MetricDoc(
        "bridge_evse_status_held", "gauge", (),
        "EVSE statuses waiting until the hub holds the EVSE's data.",
    ),
    MetricDoc(
        "bridge_evse_data_fullload_last_success_timestamp_seconds", "gauge", (),
        "Unix time of the last data fullLoad the hub accepted (0: none yet).",
    ),
    # The data-quality report (GET /api/v2/data-quality) in numbers, made again when the
    # catalog changed (bridge.ops.quality_metrics).
    MetricDoc(
        "bridge_evse_data_assessed", "gauge", (),
        "EVSEs the data-quality report covers: not REMOVED, of a station in stock or "
        "production.",
    ),
    MetricDoc(
        "bridge_evse_data_evses_with_findings", "gauge", ("severity",),
        "EVSEs with at least one data-quality finding of the severity: error (OICP requires "
        "what is missing or wrong: the hub refuses the record) or warning (lowers Hubject's "
        "EVSE Data Score). Alert on errors above 0.",
    ),
    MetricDoc(
        "bridge_evse_data_findings", "gauge", ("severity", "code"),
        "EVSEs with at least one data-quality finding of the code (every code of the "
        "report, 0 when none has it; a code has one severity).",
    ),
    MetricDoc(
        "bridge_evse_data_missing_fields", "gauge", ("field",),
        "EVSEs without a counted field (the 15 of the report, e.g. location.opening_times).",
    ),
    MetricDoc(
        "bridge_evse_data_score_evses", "gauge", ("score",),
        "EVSEs by data-quality score band: 0-24, 25-49, 50-74, 75-99, 100.",
    ),
    MetricDoc(
        "bridge_evse_data_score_min", "gauge", (),
        "Lowest data-quality score of an EVSE (0-100); absent without EVSEs.",
    ),
    MetricDoc(
        "bridge_evse_data_score_mean", "gauge", (),
        "Mean data-quality score of the EVSEs (0-100; the report's score_mean unrounded); "
        "absent without EVSEs.",
    ),
    MetricDoc(
        "bridge_evse_data_completeness_mean", "gauge", (),
        "Mean percent of the counted fields the EVSEs have (0-100); absent without EVSEs.",
    ),
    MetricDoc(
        "bridge_hub_client_cert_days_left", "gauge", (),
        "Days until the hub client certificate (oicp.client_cert) expires; absent without one.",
    ),
    MetricDoc(
        "bridge_ocpp_server_cert_days_left", "gauge", (),
        "Days until the OCPP port's certificate (ocpp.security.tls_cert) expires; absent "
        "without TLS.",
    ),
    MetricDoc(
        "bridge_ocpp_charger_crl_hours_left", "gauge", (),
        "Hours until the first charger CRL (ocpp.security.charger_crl) passes its nextUpdate; "
        "after that chargers of its CA are refused. Absent without CRLs.",
    ),
    MetricDoc(
        "bridge_ocpp_auth_failures_total", "counter", ("reason",),
        "Charger connections refused by authentication, by reason (wrong_password, "
        "client_cert_mismatch, unknown_charge_point, throttled, ...).",
    ),
    MetricDoc(
        "bridge_ocpp_password_checks_total", "counter", (),
        "Password checks (scrypt runs) for Basic-auth logins, right or wrong, including the "
        "decoy checks for unknown IDs; a login verified since the start costs none.",
    ),
    MetricDoc(
        "bridge_ocpp_connections_refused_total", "counter", ("reason",),
        "OCPP connections closed at once, before any handshake, by reason: address_limit "
        "(max_connections_per_address), handshake_limit (max_tls_handshakes), "
        "address_handshake_limit (max_tls_handshakes_per_address).",
    ),
    MetricDoc(
        "bridge_ops_connections_refused_total", "counter", ("reason",),
        "Ops port connections closed at once: connection_limit (ops.max_connections), "
        "address_limit (ops.max_connections_per_address) or descriptor_reserve (open files "
        "near the limit, kept for chargers).",
    ),
    # Proxy mode (docs/proxy.md); zero unless some charger is proxied.
    MetricDoc(
        "bridge_upstream_connections", "gauge", (),
        "Open connections to the operator's CSMS (one per proxied charger).",
    ),
    MetricDoc(
        "bridge_upstream_handshakes_total", "counter", ("outcome",),
        "Attempts to open a proxied charger's CSMS connection: ok, or why not (unauthorized, "
        "forbidden, not_found: relayed to the charger; unreachable, timeout, busy: 503; tls, "
        "bad_status, bad_handshake, error: 502).",
    ),
    MetricDoc(
        "bridge_upstream_frames_total", "counter", ("direction",),
        "Frames relayed unchanged, to_csms or to_charger.",
    ),
    MetricDoc(
        "bridge_upstream_relay_errors_total", "counter", ("kind",),
        "What went wrong while relaying: unparsable frames (relayed anyway), status reports "
        "ignored or dropped by the tap, status_refused (a CALLERROR of the CSMS), tap_failed "
        "(not stored in time), abnormal_close (a hop lost without a close frame), internal.",
    ),
    MetricDoc(
        "bridge_upstream_added_latency_seconds", "histogram", ("direction",),
        "Time from receiving a frame on one hop to having written it to the other, including "
        "the storing of a tapped status before its confirmation is relayed.",
    ),
)  # fmt: skip

#: Each metric's entry by its exposed name.
BY_NAME = {m.name: m for m in METRICS}
