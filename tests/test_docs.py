"""Operator docs and deployment files agree with the code (generated parts are not stale)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from pydantic import BaseModel

from bridge.config import (
    ChargerSettings,
    HubSimSettings,
    OcppSettings,
    OpsSettings,
    Settings,
    load_settings,
)
from bridge.ops import docs

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = ROOT / "docs"
OPERATIONS = (DOCS / "operations.md").read_text(encoding="utf-8")
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
RUN_COMMAND = ["oicp-bridge", "run", "--config", "/etc/bridge/bridge.yaml"]


def sections() -> list[tuple[str, type[BaseModel]]]:
    out = []
    for name, field in Settings.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out.append((name, field.annotation))
    return out


# -- generated files are current -----------------------------------------------------------------
def test_configuration_reference_is_current() -> None:
    path = ROOT / "docs" / "configuration.md"
    assert path.read_text(encoding="utf-8") == docs.config_reference(), (
        "docs/configuration.md is stale: run `make docs` (python -m bridge.ops.docs --write)"
    )


def test_metrics_table_is_current() -> None:
    assert docs.with_metrics(OPERATIONS) == OPERATIONS, (
        "the metrics table in docs/operations.md is stale: run `make docs`"
    )
    assert docs.stale() == []


def test_readme_links_the_configuration_reference() -> None:
    assert "(docs/configuration.md)" in README


# -- the reference covers the model ---------------------------------------------------------------
def leaves() -> list[tuple[tuple[str, ...], Any]]:
    """Every setting of every section, nested models walked (as the reference lists them)."""
    return [leaf for section, model in sections() for leaf in docs.leaf_fields(model, (section,))]


def test_every_setting_has_a_description() -> None:
    every = [*leaves(), *docs.leaf_fields(ChargerSettings, ("chargers", "<id>"))]
    missing = [".".join(path) for path, field in every if not (field.description or "").strip()]
    assert missing == []
    assert len(every) > len(sections()) * 2
    assert all((model.__doc__ or "").strip() for _, model in sections())


def test_every_setting_is_a_row_with_its_env_name_and_default() -> None:
    reference = docs.config_reference()
    rows = {line.split(" | ")[0].strip("| `"): line for line in reference.splitlines()
            if line.startswith("| `")}  # fmt: skip
    for path, field in leaves():
        row = rows[".".join(path)]
        assert "`BRIDGE_" + "__".join(p.upper() for p in path) + "`" in row
        default = field.get_default(call_default_factory=True)
        if isinstance(default, bool):
            assert f"`{str(default).lower()}`" in row
        elif isinstance(default, int | str) and not isinstance(default, float):
            assert f"`{getattr(default, 'value', default)}`" in row, row
        assert (field.description or "").split()[0] in row
    assert "chargers.<charge point ID>.evses" in rows
    assert "`BRIDGE_CHARGERS`" in reference and "`BRIDGE_CHARGERS__<ID>__EVSES`" in reference


def _other_value(annotation: Any, default: Any, field: Any) -> Any:
    """A valid value different from the default, for number and boolean settings."""
    if annotation is bool:
        return not default
    if annotation in (int, float):
        limit = next((m.le for m in field.metadata if hasattr(m, "le")), None)
        return default - 1 if limit is not None and default >= limit else default + 1
    return None


def test_documented_environment_names_really_override(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Set every number/boolean setting through its documented variable and read it back."""
    checked = set()
    for path, field in leaves():
        default = field.get_default(call_default_factory=True)
        value = _other_value(field.annotation, default, field)
        if value is None or path in (("ocpp", "allow_unlisted"), ("ocpp", "security", "profile")):
            continue  # refused alone: they need evse_id_template / passwords or certificates
        monkeypatch.setenv(docs.env_name(*path), str(value).lower())
        got: Any = load_settings(None)
        for part in path:
            got = getattr(got, part)
        assert got == value, path
        monkeypatch.delenv(docs.env_name(*path))
        checked.add(".".join(path))
    assert {
        "ocpp.port",
        "ops.port",
        "delivery.pause_retry",
        "ocpp.security.message_burst",
    } <= checked
    monkeypatch.setenv(docs.env_name("chargers"), '{"CP9": {"evses": {"1": "DE*ABC*E9*1"}}}')
    assert load_settings(None).chargers["CP9"].evses == {1: "DE*ABC*E9*1"}


def test_types_and_limits_are_readable() -> None:
    reference = docs.config_reference()
    assert "| `ocpp.port` | integer (≥ 0, ≤ 65535) | `9000` |" in reference
    assert "| `oicp.operator_id` | OICP OperatorID |" in reference
    assert "mapping OCPP status → OICP status" in reference
    assert "one of `Unknown`, `OutOfService`" in reference
    assert "typing." not in reference and "<function" not in reference


# -- README and docs/ -----------------------------------------------------------------------------
def test_readme_starts_with_make_run_and_make_test() -> None:
    block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert block is not None and README.index(block.group(0)) < README.index("\n## ")
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["make run", "make test"]


def test_readme_is_for_the_first_hour() -> None:
    """What it is, two commands, a first charger, where to look next: the rest is in docs/."""
    assert len(README.splitlines()) <= 250
    for heading in ("## What it is", "## Your first charger", "## Documentation"):
        assert heading in README, heading
    # The demo tools are the next step after make run, right there.
    first = README.split("## Your first charger", 1)[1].split("\n## ", 1)[0]
    for text in ("make chargers", "localhost:9501/sim/state", "localhost:9501/sim/stats",
                 "docs/simulators.md", "state/hub-sim.json"):  # fmt: skip
        assert text in first, text
    watch = README.split("## What to watch", 1)[1].split("\n## ", 1)[0]
    for text in ("/readyz", "/healthz", "bridge_hub_reachable", "bridge_push_paused"):
        assert text in watch, text


def test_every_docs_page_is_in_both_indexes() -> None:
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    pages = sorted(p.name for p in DOCS.iterdir() if p.name != "README.md")
    assert {"operations.md", "security.md", "configuration.md", "deploying.md",
            "going-live.md"} <= set(pages)  # fmt: skip
    for page in pages:
        assert f"]({page})" in index, page
        if page.endswith(".md"):
            assert f"](docs/{page})" in README, page


def test_docs_document_the_ops_surface() -> None:
    api = (DOCS / "api.md").read_text(encoding="utf-8")
    deploying = (DOCS / "deploying.md").read_text(encoding="utf-8")
    for text in ("/healthz", "/readyz", "/metrics", "`ops.listening`", "`ops.api_error`"):
        assert text in OPERATIONS, text
    assert "/api/v1/evses" in api and "X-Total-Count" in api
    assert " ".join(RUN_COMMAND) in deploying
    troubleshooting = OPERATIONS[OPERATIONS.index("## Troubleshooting") :]
    for code in ("`017`", "`018`", "`022`", "`300`", "`429`"):
        assert code in troubleshooting, code


# -- container files ------------------------------------------------------------------------------
def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.replace("\\\n", " ")
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_command_user_healthcheck_and_ports() -> None:
    instructions = _dockerfile_instructions()
    final = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    cmd = [yaml.safe_load(v) for k, v in final if k == "CMD"]
    assert cmd == [RUN_COMMAND]
    user = [v for k, v in final if k == "USER"]
    assert len(user) == 1 and user[0].split(":")[0] not in ("0", "root")
    assert len([k for k, _ in instructions if k == "FROM"]) >= 2  # multi-stage
    health = [v for k, v in final if k == "HEALTHCHECK"]
    assert len(health) == 1 and "/healthz" in health[0]
    assert f"'{OpsSettings().port}'" in health[0]  # the default ops port
    exposed = {int(p) for k, v in final if k == "EXPOSE" for p in v.split()}
    assert exposed == {OcppSettings().port, OpsSettings().port}
    volumes = [yaml.safe_load(v) for k, v in final if k == "VOLUME"]
    workdir = [v for k, v in final if k == "WORKDIR"][-1]
    assert volumes == [[workdir]]  # relative state.database paths land on the volume
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", DOCKERFILE, re.M)


def test_compose_runs_the_image_command_with_a_named_state_volume() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"bridge", "hub-sim", "chargers", "postgres", "replicated-hub-sim",
                             "replica-a", "replica-b", "load-balancer"}  # fmt: skip
    bridge = services["bridge"]
    assert bridge["command"] == RUN_COMMAND
    mounts = {m.split(":")[1]: m.split(":")[0] for m in bridge["volumes"]}
    workdir = [v for k, v in _dockerfile_instructions() if k == "WORKDIR"][-1]
    assert mounts[workdir] in COMPOSE["volumes"]  # a named volume, not a host path
    assert (ROOT / mounts["/etc/bridge/bridge.yaml"]).is_file()
    published = {}  # container port -> the host address it is published on ("" = every one)
    for mapping in bridge["ports"]:
        parts = mapping.split(":")
        published[int(parts[-1])] = parts[0] if len(parts) == 3 else ""
    # Chargers reach the OCPP port from anywhere; the unauthenticated ports stay on this host.
    assert published == {OcppSettings().port: "", OpsSettings().port: "127.0.0.1",
                         HubSimSettings().port: "127.0.0.1"}  # fmt: skip
    # ... and inside the container the ops port listens where the published port reaches it.
    assert bridge["environment"]["BRIDGE_OPS__HOST"] == "0.0.0.0"
    assert services["hub-sim"]["network_mode"] == "service:bridge"
    sim_command = services["hub-sim"]["command"]
    assert "hub-sim" in sim_command
    # The simulator keeps its records on the state volume, as the bridge does.
    state_file = sim_command[sim_command.index("--state-file") + 1]
    assert state_file.startswith(workdir + "/")
    assert f"{mounts[workdir]}:{workdir}" in services["hub-sim"]["volumes"]
    chargers = services["chargers"]
    assert chargers["profiles"] == ["chargers"]
    assert chargers["depends_on"]["bridge"]["condition"] == "service_healthy"
    # The simulated chargers are the ones the mounted registry lists.
    config = load_settings(ROOT / mounts["/etc/bridge/bridge.yaml"])
    simulated = {arg.split(":")[0] for arg in chargers["command"] if ":" in arg and "/" not in arg}
    assert simulated == set(config.chargers)
    # ... and the comments count them right.
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    counted = re.findall(r"\b(\w+) simulated chargers", text)
    assert counted and {NUMBERS.get(word, word) for word in counted} == {len(simulated)}


NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}


def test_make_chargers_simulates_the_example_registry() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    recipe = re.search(r"^chargers:.*\n\t(.*)$", makefile, re.M)
    assert recipe is not None and "bridge.devtools.charger_sim" in recipe.group(1)
    specs = [arg for arg in recipe.group(1).split() if re.match(r"^[A-Z][\w-]*:", arg)]
    example = load_settings(ROOT / "config" / "bridge.example.yaml")
    assert {spec.split(":")[0] for spec in specs} == set(example.chargers)
    for spec in specs:  # as many EVSEs as the registry lists
        cp_id, _, evses = spec.split(":")
        assert int(evses) == len(example.chargers[cp_id].evses), spec


def test_example_configuration() -> None:
    """The example binds the unauthenticated ops port to loopback and shows real hash syntax."""
    from bridge.passwords import DEFAULT_COST

    text = (ROOT / "config" / "bridge.example.yaml").read_text(encoding="utf-8")
    example = load_settings(ROOT / "config" / "bridge.example.yaml")
    assert example.ops.host == "127.0.0.1"
    shown = re.findall(r"scrypt:(\d+):(\d+):(\d+):", text)
    assert shown and all(n == str(1 << DEFAULT_COST) for n, _, _ in shown)


def test_dockerignore_keeps_the_build_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert lines[lines.index("*")] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for keyword, rest in _dockerfile_instructions():
        if keyword == "COPY" and "--from" not in rest:
            copied.update(path.split("/")[0] for path in rest.split()[:-1])
    assert copied <= allowed, copied - allowed


# -- alerting rules ------------------------------------------------------------------------------
def test_alert_rules_use_only_metrics_the_bridge_exports() -> None:
    from bridge.ops.metric_table import METRICS

    rules = yaml.safe_load((ROOT / "docs" / "prometheus-alerts.yml").read_text(encoding="utf-8"))
    exported = set()
    for metric in METRICS:
        exported.add(metric.name)
        if metric.kind == "histogram":
            exported |= {f"{metric.name}_{part}" for part in ("bucket", "sum", "count")}
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert len({a["alert"] for a in alerts}) == len(alerts) >= 8
    used = set()
    for alert in alerts:
        assert alert["labels"]["severity"] in ("warning", "critical"), alert["alert"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        promql_parser.parse(alert["expr"])  # ValueError if it is not PromQL
        used |= set(re.findall(r"\bbridge_[a-z0-9_]+", alert["expr"]))
    assert used <= exported, used - exported
    # the failure modes an operator must hear about have a rule
    for metric in ("bridge_push_paused", "bridge_push_oldest_pending_age_seconds",
                   "bridge_fullload_last_success_timestamp_seconds",
                   "bridge_hub_client_cert_days_left", "bridge_hub_reachable"):  # fmt: skip
        assert metric in used, metric
    assert "docs/prometheus-alerts.yml" in README and "(prometheus-alerts.yml)" in OPERATIONS


# -- log catalogue -------------------------------------------------------------------------------
_LOG_CALL = re.compile(r"\blog\.(?:debug|info|warning|error|exception)\(\s*\"([a-z_]+\.[a-z_.]+)\"")


def documented_events() -> set[str]:
    """Event names in the Logs table of docs/operations.md; ``.x`` continues the name before."""
    table = OPERATIONS.split("\n## Logs\n", 1)[1].split("\n## ", 1)[0]
    events: set[str] = set()
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        prefix = ""
        for written in re.findall(r"`([a-z_.]+)`", line.split(" | ")[0]):
            if not written.startswith("."):
                prefix = written.rsplit(".", 1)[0]
            events.add(prefix + written if written.startswith(".") else written)
    return events


def test_every_log_event_is_in_the_log_catalogue() -> None:
    emitted = set()
    for path in (ROOT / "bridge").rglob("*.py"):
        emitted |= set(_LOG_CALL.findall(path.read_text(encoding="utf-8")))
    assert len(emitted) > 50  # the pattern still finds the calls
    assert emitted - documented_events() == set()


# -- benchmark durations ---------------------------------------------------------------------------
def test_every_page_gives_make_bench_the_same_duration() -> None:
    """The quick run is announced with one duration everywhere, the one bench/RESULTS.md saw."""
    pages = [ROOT / "Makefile", ROOT / "README.md", ROOT / "bench" / "README.md",
             *DOCS.glob("*.md")]  # fmt: skip
    quick = set()
    for page in pages:
        for line in page.read_text(encoding="utf-8").splitlines():
            if "make bench" in line or "bench:" in line:
                quick |= set(re.findall(r"quick[^~\n]*~(\d+) min", line))
    assert len(quick) == 1, quick
    results = (ROOT / "bench" / "RESULTS.md").read_text(encoding="utf-8")
    took = re.search(r"the quick run \(`make bench`[^)]*\) took (\d+) s", results)
    assert took is not None and round(int(took.group(1)) / 60) == int(quick.pop())
