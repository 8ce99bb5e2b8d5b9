"""The container image, built and run for real with podman (``make image-test``).

Not part of ``make test`` (building takes a minute or two and needs root for podman on these
machines); ``make image-test`` prepares podman and a local base image
(``scripts/image-setup.sh``) and runs this file with BRIDGE_IMAGE_TEST=1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import RawCharger

pytestmark = pytest.mark.skipif(
    os.environ.get("BRIDGE_IMAGE_TEST") != "1", reason="make image-test builds and runs the image"
)

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/ocpp-oicp-bridge:test"
BASE = os.environ.get("BASE_IMAGE", "localhost/pybase:bookworm")
# runc and cgroupfs: the default crun fails on these machines (hybrid cgroups).
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    done = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


@pytest.fixture(scope="module")
def image() -> str:
    mounts = ["-v", "/etc/ssl/certs:/etc/ssl/certs:ro"]
    if Path("/etc/pip.conf").is_file():  # pip inside the build reaches the index as the host
        mounts += ["-v", "/etc/pip.conf:/etc/pip.conf:ro"]
    started = time.monotonic()
    podman("build", "--format", "docker", "--isolation", "chroot", "--network", "host",
           *mounts, "--build-arg", f"PYTHON_IMAGE={BASE}", "-t", IMAGE, str(ROOT),
           timeout=900)  # fmt: skip
    print(f"image built in {time.monotonic() - started:.0f} s")
    return IMAGE


@pytest.fixture
def volume() -> Iterator[str]:
    name = f"bridge-state-{os.getpid()}"
    podman("volume", "create", name)
    yield name
    podman("volume", "rm", "-f", name, check=False)


def run(image: str, volume: str, name: str, *, ocpp: int, ops: int, hub: int) -> None:
    podman("run", "-d", "--name", name, "--network", "host",
           "--ulimit", "nofile=10000:10000", "--ulimit", "nproc=4096:4096",
           "-v", f"{volume}:/var/lib/bridge",
           "-e", f"BRIDGE_OCPP__PORT={ocpp}", "-e", f"BRIDGE_OPS__PORT={ops}",
           "-e", "BRIDGE_HUB_SIM__EMBEDDED=true", "-e", f"BRIDGE_HUB_SIM__PORT={hub}",
           "-e", f"BRIDGE_OICP__BASE_URL=http://127.0.0.1:{hub}",
           "-e", "BRIDGE_HUB_SIM__STATE_FILE=/var/lib/bridge/hub-sim.json", image)  # fmt: skip


def ready(name: str, ops: int, within: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + within
    while True:
        if podman("inspect", name, "--format", "{{.State.Running}}") != "true":
            logs = podman("logs", "--tail", "20", name, check=False)
            raise AssertionError(f"the container stopped:\n{logs}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ops}/readyz", timeout=2) as answer:
                body: dict[str, object] = json.loads(answer.read())
                if answer.status == 200:
                    return body
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("the container never became ready")
        time.sleep(0.3)


def stop(name: str) -> int:
    started = time.monotonic()
    podman("stop", "-t", "15", name)
    print(f"{name} stopped in {time.monotonic() - started:.1f} s")
    return int(podman("inspect", name, "--format", "{{.State.ExitCode}}"))


async def test_the_image_runs_as_non_root_keeps_state_and_stops_cleanly(
    image: str, volume: str
) -> None:
    name = f"bridge-image-test-{os.getpid()}"
    ocpp, ops, hub = free_port(), free_port(), free_port()
    try:
        run(image, volume, name, ocpp=ocpp, ops=ops, hub=hub)
        assert ready(name, ops)["ready"] is True
        assert podman("exec", name, "id", "-u") == "10001"
        charger = await RawCharger.connect(ocpp, "CP-0001")
        await charger.status(1, "Charging")  # confirmed: stored on the volume
        await charger.close()
        assert stop(name) == 0  # SIGTERM: a clean stop
        podman("rm", name)
        run(image, volume, name, ocpp=ocpp, ops=ops, hub=hub)  # a new container on the same volume
        ready(name, ops)
        listed = json.loads(podman("exec", name, "oicp-bridge", "status", "--config",
                                   "/etc/bridge/bridge.yaml", "--json"))  # fmt: skip
        by_id = {row["evse_id"]: row for row in listed}
        assert by_id["DE*ABC*E0001*1"]["status"] == "Occupied", by_id
        assert stop(name) == 0
    finally:
        podman("rm", "-f", name, check=False)
