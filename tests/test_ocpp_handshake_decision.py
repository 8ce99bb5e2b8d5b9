"""The handshake decision on its own: an Attempt in, None or a Refusal out, no sockets."""

from __future__ import annotations

import asyncio
from http import HTTPStatus

from bridge.config import ChargerSettings, OcppSecuritySettings
from bridge.ocpp.auth import Authenticator
from bridge.ocpp.handshake import Attempt, Handshake
from bridge.passwords import hash_password
from bridge.status.registry import Registry

PASSWORD = "sixteen characters or more"


def handshake(limit: int = 3, *, unlisted: bool = False) -> Handshake:
    security = OcppSecuritySettings(profile=0, auth_failure_limit=limit)
    chargers = {
        "CP1": ChargerSettings(
            evses={1: "DE*ABC*E1*1"}, security_profile=1, password_hash=hash_password(PASSWORD)
        ),
        "CP2": ChargerSettings(evses={1: "DE*ABC*E2*1"}),
    }
    registry = Registry(
        {cp: c.evses for cp, c in chargers.items()}, "DE*ABC",
        template="{operator}*E{charge_point}*{evse}", allow_unlisted=unlisted, max_unlisted=1,
    )  # fmt: skip
    return Handshake(security, registry, Authenticator(security, chargers))


def attempt(path: str, *, address: str = "192.0.2.1", password: str | None = None) -> Attempt:
    import base64

    cp_id = path.rsplit("/", 1)[-1]
    header = [] if password is None else [
        "Basic " + base64.b64encode(f"{cp_id}:{password}".encode()).decode()
    ]  # fmt: skip
    return Attempt(path=path, address=address, peer=f"{address}:1234", authorization=header)


async def test_each_step_of_the_decision() -> None:
    hs = handshake()
    assert (await hs.decide(attempt("/other/CP2"))).status == HTTPStatus.NOT_FOUND  # type: ignore[union-attr]
    assert await hs.decide(attempt("/ocpp/CP2")) is None  # profile 0, listed
    assert (await hs.decide(attempt("/ocpp/CP9"))).status == HTTPStatus.NOT_FOUND  # type: ignore[union-attr]
    assert await hs.decide(attempt("/ocpp/CP1", password=PASSWORD)) is None  # profile 1
    wrong = await hs.decide(attempt("/ocpp/CP1", password="wrong"))
    assert wrong is not None and wrong.status == HTTPStatus.UNAUTHORIZED
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")


async def test_concurrent_logins_of_one_address_run_at_most_the_budget_of_checks() -> None:
    hs = handshake(limit=3)
    results = await asyncio.gather(
        *(hs.decide(attempt("/ocpp/CP1", password=f"guess {i}")) for i in range(50))
    )
    statuses = [r.status for r in results if r is not None]
    assert statuses.count(HTTPStatus.UNAUTHORIZED) == 3 == hs.auth.checks.done
    assert statuses.count(HTTPStatus.TOO_MANY_REQUESTS) == 47
    # Another address is not affected.
    assert await hs.decide(attempt("/ocpp/CP1", address="192.0.2.2", password=PASSWORD)) is None


async def test_unlisted_ids_only_with_evse_ids_of_their_own() -> None:
    hs = handshake(unlisted=True)
    taken = await hs.decide(attempt("/ocpp/2"))  # DE*ABC*E2*1 is CP2's
    assert taken is not None and taken.status == HTTPStatus.FORBIDDEN
    assert await hs.decide(attempt("/ocpp/NEW1", address="192.0.2.3")) is None
    full = await hs.decide(attempt("/ocpp/NEW2", address="192.0.2.3"))  # max_unlisted=1
    assert full is not None and full.status == HTTPStatus.FORBIDDEN


async def test_many_right_logins_behind_one_address_all_get_in() -> None:
    """Chargers behind one NAT logging in at once (a restart): the budget bounds the checks in
    progress of unknown outcome, not the right ones; nobody is refused."""
    security = OcppSecuritySettings(profile=1, auth_failure_limit=3)
    digest = hash_password(PASSWORD)
    chargers = {
        f"CP{i}": ChargerSettings(evses={1: f"DE*ABC*E{i}*1"}, password_hash=digest)
        for i in range(60)
    }
    registry = Registry({cp: c.evses for cp, c in chargers.items()}, "DE*ABC")
    hs = Handshake(security, registry, Authenticator(security, chargers))
    results = await asyncio.gather(
        *(hs.decide(attempt(f"/ocpp/{cp_id}", password=PASSWORD)) for cp_id in chargers)
    )
    assert results == [None] * 60
    assert hs.auth.checks.done == 60
