"""Replicas on one PostgreSQL database: real bridge processes, the hub simulator, real chargers.

The hub simulator counts the requests it is answering at once: never more than one, whatever
happens to the replicas (OICP: one operator's pushes are strictly sequential).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import websockets

from bridge.api.tokens import hash_token
from bridge.hubsim import HubSimulator
from bridge.hubsim.simulator import ReceivedPush
from bridge.status.table import OcppStatus
from tests.conftest import AUTH, OPERATOR, OPERATOR_FACTS, WRITE_TOKEN, eventually
from tests.procs import BridgeProcess, RawCharger, write_config
from tests.test_durability import (
    FLEET,
    STATUSES_16,
    STATUSES_201,
    TABLE,
    VERSION,
    Fleet,
    hub_matches,
)

pytestmark = pytest.mark.slow

LEASE = 2.0  # lease_ttl of the test replicas: failover within LEASE + ACQUIRE (+ PUSH_TIMEOUT)
ACQUIRE = 0.2
PUSH_TIMEOUT = 0.8


def replica_config(
    tmp_path: Path,
    hub: HubSimulator,
    url: str,
    name: str,
    link: DatabaseLink | None = None,
    **extra: dict[str, Any],
) -> Path:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    settings: dict[str, Any] = {
        "ocpp": {"host": "127.0.0.1", "port": 0, "offline_grace": 600},
        "oicp": {"base_url": hub.base_url, "operator_id": OPERATOR},
        "state": {"url": link.url(url) if link else url, "database": folder / "state.db"},
        "replication": {"replica_id": name, "lease_ttl": LEASE, "acquire_interval": ACQUIRE,
                        "push_timeout": PUSH_TIMEOUT, "replica_timeout": 3 * LEASE},
        "delivery": {"rate_limit_per_minute": 60000, "retry_initial": 0.05, "retry_max": 0.4,
                     "pause_retry": 0.3, "shutdown_timeout": 3},
        "fullload": {"enabled": False},
        "ops": {"host": "127.0.0.1", "port": 0},
        "log": {"level": "INFO"},
        "chargers": FLEET,
        "api": {"tokens": [{"name": "ops", "hash": hash_token(WRITE_TOKEN), "scope": "write"}]},
        "catalog": {"operator_defaults": OPERATOR_FACTS},
    }  # fmt: skip
    for key, value in extra.items():
        settings[key] = {**settings.get(key, {}), **value}
    return write_config(folder / "bridge.yaml", settings)


class Replicas:
    def __init__(
        self, tmp_path: Path, hub: HubSimulator, url: str, **extra: dict[str, Any]
    ) -> None:
        self.tmp_path, self.hub, self.url = tmp_path, hub, url
        self.extra = extra
        self.procs: dict[str, BridgeProcess] = {}

    async def start(self, name: str, link: DatabaseLink | None = None) -> BridgeProcess:
        config = replica_config(self.tmp_path, self.hub, self.url, name, link, **self.extra)
        proc = BridgeProcess(config)
        self.procs[name] = await proc.start()
        return proc

    def leaders(self) -> list[str]:
        """Replicas whose last lease event is an election (and that still run)."""
        found = []
        for name, proc in self.procs.items():
            lease = [e for e in proc.events if e.get("event") in ("leader.elected", "leader.lost")]
            alive = proc.proc is not None and proc.proc.returncode is None
            if alive and lease and lease[-1]["event"] == "leader.elected":
                found.append(name)
        return found

    async def leader(self, within: float = 10.0) -> str:
        await eventually(lambda: len(self.leaders()) == 1, within=within)
        return self.leaders()[0]

    def elected(self, name: str) -> list[dict[str, Any]]:
        return self.procs[name].named("leader.elected")

    async def close(self) -> None:
        for proc in self.procs.values():
            if proc.proc is not None and proc.proc.returncode is None:
                with contextlib.suppress(Exception):
                    await proc.terminate()


class DatabaseLink:
    """A TCP relay between one replica and PostgreSQL that can be cut: its sessions end, and
    new ones are refused, as when a network partition leaves the replica alone."""

    def __init__(self, target_port: int = 5432) -> None:
        self.target_port = target_port
        self.cut = False
        self._pipes: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> DatabaseLink:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, postgres: str) -> str:
        return postgres.replace("127.0.0.1:5432", f"127.0.0.1:{self.port}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._pipes |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def sever(self) -> None:
        self.cut = True
        for writer in self._pipes:
            writer.close()

    async def close(self) -> None:
        self.sever()
        if self._server is not None:
            self._server.close()


class Recorder:
    """When each hub request ended (the simulator stamps its arrival)."""

    def __init__(self, hub: HubSimulator) -> None:
        self.ended: list[tuple[ReceivedPush, float]] = []
        hub.on_push = lambda push: self.ended.append((push, time.monotonic()))


def in_order(hub: HubSimulator, sent: dict[str, list[str]]) -> bool:
    """Per EVSE, the statuses the hub accepted are a subsequence of the ones the chargers sent
    (coalescing may skip some, nothing comes back out of order)."""
    accepted: dict[str, list[str]] = {}
    for push in hub.received:
        if push.code == "000" and push.action in ("insert", "update"):
            for evse_id, status in push.records:
                accepted.setdefault(evse_id, []).append(status or "")
    for evse_id, statuses in accepted.items():
        remaining = iter(sent.get(evse_id, []))
        if not all(any(s == t for t in remaining) for s in statuses):
            return False
    return True


class Traffic(Fleet):
    """The durability fleet, each charger on the replica given, remembering every status sent
    (as OICP) per EVSE."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: dict[str, list[str]] = {}

    async def connect_to(self, ports: dict[str, int]) -> None:
        for cp_id, version in VERSION.items():
            self.chargers[cp_id] = await RawCharger.connect(ports[cp_id], cp_id, version)

    async def burst(self, count: int, seed: int, stop_on_error: bool = False) -> int:
        rng = random.Random(seed)

        async def one(cp_id: str, charger: RawCharger) -> int:
            done = 0
            choices = STATUSES_16 if charger.version == "1.6" else STATUSES_201
            for _ in range(count):
                key, status = rng.choice([1, 2]), rng.choice(choices)
                evse_id = FLEET[cp_id]["evses"][key]
                self.attempted[evse_id] = status
                self.sent.setdefault(evse_id, []).append(TABLE[OcppStatus(status)].value)
                try:
                    await charger.status(key, status)
                except (websockets.ConnectionClosed, OSError, TimeoutError):
                    if stop_on_error:
                        return done
                    raise
                self.confirmed[evse_id] = status
                done += 1
            return done

        return sum(await asyncio.gather(*(one(c, ch) for c, ch in self.chargers.items())))


async def test_reports_on_every_replica_reach_the_hub_in_order_one_at_a_time(
    tmp_path: Path, hub: HubSimulator, postgres: str
) -> None:
    replicas = Replicas(tmp_path, hub, postgres)
    traffic = Traffic()
    try:
        for name in ("r1", "r2", "r3"):
            await replicas.start(name)
        leader = await replicas.leader()
        ports = [p.ocpp_port for p in replicas.procs.values()]
        await traffic.connect_to({cp: ports[i % 3] for i, cp in enumerate(VERSION)})
        hub.latency = 0.005
        assert await traffic.burst(30, seed=5) == 120
        truth = traffic.truth()
        await eventually(lambda: hub.state == truth, within=30)
        assert hub.max_in_flight == 1
        assert in_order(hub, traffic.sent)
        assert replicas.leaders() == [leader]  # no failover without a failure
        followers = [n for n in replicas.procs if n != leader]
        for name in followers:  # followers take reports and never call the hub
            assert not replicas.procs[name].named("push.ok")
    finally:
        await traffic.close()
        await replicas.close()


async def test_sigkill_of_the_leader_mid_burst(
    tmp_path: Path, hub: HubSimulator, postgres: str
) -> None:
    replicas = Replicas(tmp_path, hub, postgres)
    traffic = Traffic()
    try:
        for name in ("r1", "r2", "r3"):
            await replicas.start(name)
        leader = await replicas.leader()
        others = [n for n in replicas.procs if n != leader]
        ports = {cp: replicas.procs[others[i % 2]].ocpp_port for i, cp in enumerate(VERSION)}
        ports["CP1"] = replicas.procs[leader].ocpp_port  # one charger on the leader itself
        await traffic.connect_to(ports)
        hub.latency = 0.01  # keep a queue: the kill finds pushes pending and one in flight
        burst = asyncio.create_task(traffic.burst(150, seed=9, stop_on_error=True))
        await eventually(lambda: len(hub.received) >= 10, within=30)
        killed_at = time.monotonic()
        assert await replicas.procs[leader].kill() == -9
        await burst
        new = await replicas.leader(within=3 * LEASE + 5)
        took = replicas.elected(new)[-1]["monotonic"] - killed_at
        assert took <= LEASE + ACQUIRE + 1.0, took  # +1 s: a loaded CI machine
        await eventually(lambda: hub_matches(hub, traffic), within=30)
        await asyncio.sleep(0.5)
        assert hub_matches(hub, traffic), (hub.state, traffic.confirmed)
        assert hub.max_in_flight == 1
        assert in_order(hub, traffic.sent)
    finally:
        await traffic.close()
        await replicas.close()


async def test_a_leader_cut_from_the_database_stops_before_another_starts(
    tmp_path: Path, hub: HubSimulator, postgres: str
) -> None:
    replicas = Replicas(tmp_path, hub, postgres)
    recorder = Recorder(hub)
    traffic = Traffic()
    try:
        link = await DatabaseLink().start()
        await replicas.start("r1", link)  # the first to start leads: r1, behind the link
        leader = await replicas.leader()
        assert leader == "r1"
        await replicas.start("r2")
        other = "r2"
        await traffic.connect_to(dict.fromkeys(VERSION, replicas.procs[other].ocpp_port))
        hub.latency = 0.05
        burst = asyncio.create_task(traffic.burst(100, seed=13))
        await eventually(lambda: len(hub.received) >= 5, within=30)
        link.sever()  # no new session gets through; and the database ends the open ones:
        async with await psycopg.AsyncConnection.connect(postgres, autocommit=True) as db:
            await db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s", (f"bridge:{leader}",),
            )  # fmt: skip
        await eventually(lambda: replicas.elected(other), within=3 * LEASE + 5)
        await burst
        lost = replicas.procs[leader].named("leader.lost")
        assert lost, "the cut leader never stepped down"
        stopped, elected = lost[0]["monotonic"], replicas.elected(other)[-1]["monotonic"]
        assert stopped < elected
        # Nothing from the old leader after it stopped, nothing of it in flight at the handover.
        assert all(end < elected for push, end in recorder.ended if push.time < elected)
        assert not [p for p, _ in recorder.ended if stopped < p.time < elected]
        assert hub.max_in_flight == 1
        truth = traffic.truth()
        await eventually(lambda: hub.state == truth, within=30)
        await link.close()
    finally:
        await traffic.close()
        await replicas.close()


async def test_a_rolling_restart_loses_nothing(
    tmp_path: Path, hub: HubSimulator, postgres: str
) -> None:
    replicas = Replicas(tmp_path, hub, postgres)
    traffic = Traffic()
    try:
        for name in ("r1", "r2"):
            await replicas.start(name)
        await replicas.leader()
        hub.latency = 0.005
        for round_, name in enumerate(("r1", "r2", "r1")):
            survivor = next(n for n in replicas.procs if n != name)
            await traffic.close()
            traffic.chargers.clear()
            await traffic.connect_to(dict.fromkeys(VERSION, replicas.procs[survivor].ocpp_port))
            burst = asyncio.create_task(traffic.burst(40, seed=round_))
            await asyncio.sleep(0.2)
            assert await replicas.procs[name].terminate() == 0  # a clean stop: lease handed on
            await replicas.start(name)
            await burst
        truth = traffic.truth()
        await eventually(lambda: hub.state == truth, within=30)
        assert hub.max_in_flight == 1
        assert in_order(hub, traffic.sent)
    finally:
        await traffic.close()
        await replicas.close()


async def test_presence_across_replicas(tmp_path: Path, hub: HubSimulator, postgres: str) -> None:
    """A charger on one replica is not offline for another; a second connection of the same
    charge point on another replica wins, and the first is closed."""
    replicas = Replicas(tmp_path, hub, postgres)
    try:
        a, b = await replicas.start("r1"), await replicas.start("r2")
        await replicas.leader()
        first = await RawCharger.connect(a.ocpp_port, "CP1")
        await first.status(1, "Charging")
        await eventually(lambda: hub.state.get("DE*ABC*E1*1") == "Occupied", within=10)
        second = await RawCharger.connect(b.ocpp_port, "CP1")
        await second.status(1, "Available")
        await eventually(lambda: first.ws.close_code is not None, within=10)
        await eventually(lambda: hub.state.get("DE*ABC*E1*1") == "Available", within=10)
        assert a.named("charger.taken_over")
        await second.close()
    finally:
        await replicas.close()


async def test_the_ops_port_shows_roles_and_only_the_leader_sends_a_fullload(
    tmp_path: Path, hub: HubSimulator, postgres: str
) -> None:
    replicas = Replicas(tmp_path, hub, postgres)
    try:
        for name in ("r1", "r2"):
            await replicas.start(name)
        leader = await replicas.leader()
        follower = next(n for n in replicas.procs if n != leader)
        async with httpx.AsyncClient() as http:

            def ops(name: str) -> str:
                return f"http://127.0.0.1:{replicas.procs[name].ops_port}"

            roles = {}
            for name in replicas.procs:
                ready = await http.get(ops(name) + "/readyz")
                assert ready.status_code == 200  # followers take chargers: ready too
                roles[name] = ready.json()["role"]
            assert roles == {leader: "leader", follower: "follower"}
            metrics = (await http.get(ops(follower) + "/metrics")).text
            assert 'bridge_replica_role{role="follower"} 1.0' in metrics
            details = (await http.get(ops(leader) + "/healthz")).json()["details"]["replica"]
            assert details["role"] == "leader" and details["epoch"] >= 1

            async def refused() -> bool:
                answer = await http.post(ops(follower) + "/api/v2/commands/fullload", headers=AUTH)
                return answer.status_code == 409 and leader in answer.json()["status_message"]

            deadline = time.monotonic() + 10  # the follower learns the leader's name
            while not await refused():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            sent = await http.post(ops(leader) + "/api/v2/commands/fullload?wait=10", headers=AUTH)
            assert sent.json()["data"]["state"] == "accepted"
        assert [p.action for p in hub.received] == ["fullLoad"]
    finally:
        await replicas.close()


async def test_offline_is_decided_once_across_replicas(
    tmp_path: Path, hub: HubSimulator, postgres: str
) -> None:
    """A charger that moves to another replica within the grace is not declared offline; the
    chargers of a replica that died go offline after the grace all the same."""
    replicas = Replicas(tmp_path, hub, postgres, ocpp={"offline_grace": 1.5},
                        replication={"replica_timeout": 2.5})  # fmt: skip
    try:
        a = await replicas.start("r1")
        assert await replicas.leader() == "r1"
        b = await replicas.start("r2")
        moving = await RawCharger.connect(a.ocpp_port, "CP1")
        await moving.status(1, "Charging")
        await eventually(lambda: hub.state.get("DE*ABC*E1*1") == "Occupied", within=10)
        await moving.close()
        moving = await RawCharger.connect(b.ocpp_port, "CP1")  # on the follower now
        await moving.status(2, "Available")
        await asyncio.sleep(2.5)  # past the grace
        assert "Unknown" not in [s for e, s in hub.state.items() if e.startswith("DE*ABC*E1*")]
        assert not a.named("charger.offline")
        assert await b.kill() == -9  # the follower holding CP1 dies
        await eventually(lambda: hub.state.get("DE*ABC*E1*1") == "Unknown", within=15)
        assert a.named("replica.charger_orphaned") and a.named("charger.offline")
    finally:
        await replicas.close()


async def test_a_station_created_on_a_follower_is_in_force_on_the_leader(
    tmp_path: Path, hub: HubSimulator, postgres: str
) -> None:
    """The management API of any replica: the others follow the catalog at once."""
    from tests.test_catalog_api import LOCATION, station

    replicas = Replicas(tmp_path, hub, postgres)
    try:
        for name in ("r1", "r2"):
            await replicas.start(name)
        leader = await replicas.leader()
        follower = next(n for n in replicas.procs if n != leader)
        base = f"http://127.0.0.1:{replicas.procs[follower].ops_port}/api/v2"
        async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=10) as api:
            assert (await api.post("/locations", json=LOCATION)).json()["status_code"] == 1000
            created = await api.post("/chargestations", json=station("CP-NEW"))
            assert created.json()["status_code"] == 1000, created.text

        def followed() -> bool:
            events = replicas.procs[leader].named("catalog.followed")
            return any("station:CP-NEW:v1" in e["objects"] for e in events)

        await eventually(followed, within=10)
        charger = await RawCharger.connect(replicas.procs[leader].ocpp_port, "CP-NEW")
        await charger.status(1, "Charging")  # known to the leader's registry: accepted, mapped
        await eventually(lambda: hub.state.get("DE*ABC*E900*1") == "Occupied", within=10)
        await charger.close()
        # The follower shows what the leader's EVSE data pushes achieved (the change feed).
        assert "DE*ABC*E900*1" in hub.data_state
        async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=10) as api:

            async def follower_sees() -> Any:
                r = await api.get("/chargestations/CP-NEW")
                return r.json()["data"]["evses"][0]["hub_data"]

            for _ in range(100):
                if (await follower_sees())["state"] == "acknowledged":
                    break
                await asyncio.sleep(0.05)
            assert (await follower_sees())["hub_acknowledged"] is True
    finally:
        await replicas.close()


async def test_network_assignments_only_from_the_leader_and_not_again_after_failover(
    tmp_path: Path, hub: HubSimulator, postgres: str
) -> None:
    """A network created on a follower is sent by the push leader alone; the next leader reads
    what the hub acknowledged from the database and does not send it again."""
    replicas = Replicas(tmp_path, hub, postgres)
    try:
        for name in ("r1", "r2"):
            await replicas.start(name)
        leader = await replicas.leader()
        follower = next(n for n in replicas.procs if n != leader)
        charger = await RawCharger.connect(replicas.procs[leader].ocpp_port, "CP1")
        await charger.status(1, "Available")
        await eventually(lambda: "DE*ABC*E1*1" in hub.state, within=10)
        base = f"http://127.0.0.1:{replicas.procs[follower].ops_port}/api/v2"
        network = {"id": "Net", "groups": [{"name": "AC", "evses": ["DE*ABC*E1*1"]}]}
        async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=10) as api:
            created = await api.post("/networks", json=network)
            assert created.json()["status_code"] == 1000, created.text
        groups = hub.networks.networks
        await eventually(lambda: groups.get(OPERATOR, {}).get("Net", {}).get("groups") ==
                         {"DE*ABC*E1*1": "AC"}, within=10)  # fmt: skip
        # The hub applies the body before it answers, the leader logs after the answer.
        await eventually(lambda: bool(replicas.procs[leader].named("network.ok")))
        assert not replicas.procs[follower].named("network.ok")
        # The follower follows what the hub acknowledged: its API refuses to move the EVSE
        # once the network is active.
        async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=10) as api:
            for _ in range(100):
                read = (await api.get("/networks/Net")).json()["data"]
                if read["assignments"][0]["hub_group"] == "AC":
                    break
                await asyncio.sleep(0.05)
            assert read["assignments"][0]["state"] == "acknowledged"
            active = await api.patch("/networks/Net", json={"state": "active"})
            assert active.json()["status_code"] == 1000, active.text
            moved = await api.patch("/networks/Net", json={"groups": [
                {"name": "DC", "evses": ["DE*ABC*E1*1"]}]})  # fmt: skip
            assert moved.json()["status_code"] == 2001 and "active" in moved.text
        await charger.close()
        await replicas.procs[leader].terminate()
        await eventually(lambda: replicas.leaders() == [follower], within=15)
        await eventually(lambda: bool(replicas.procs[follower].named("leader.resumed")))
        await asyncio.sleep(1.0)  # a new leader that had forgotten would send it at once
        sent = [p for p in hub.received if p.endpoint == "network"]
        assert len(sent) == 1 and not replicas.procs[follower].named("network.ok")
        assert hub.max_in_flight == 1
    finally:
        await replicas.close()
