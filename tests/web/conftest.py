"""The whole platform as `make run` starts it (embedded NATS and Redis on free ports,
every service a process), and headless Chromium to use it."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.infra import free_port
from tests.restream.conftest import rtmp_server  # noqa: F401 - the RTMP sink fixture
from tests.web.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Platform:
    web_url: str
    registry_url: str
    organizer_key: str
    webinar_id: str
    links: dict[str, str]
    data_dir: Path

    def create_webinar(self, **fields: object) -> str:
        return self.create_webinar_with_host(**fields)[0]

    def create_webinar_with_host(self, **fields: object) -> tuple[str, str]:
        """A new webinar: (id, host join link)."""
        body = {"title": "Small room", "starts_at": "2030-01-01T10:00:00Z",
                "duration_minutes": 30, **fields}  # fmt: skip
        resp = httpx.post(f"{self.registry_url}/v1/webinars", json=body,
                          headers={"Authorization": f"Bearer {self.organizer_key}"})  # fmt: skip
        resp.raise_for_status()
        return str(resp.json()["id"]), str(resp.json()["host"]["join_url"])

    def add_panelist(self, webinar_id: str, name: str, email: str) -> str:
        resp = httpx.post(f"{self.registry_url}/v1/webinars/{webinar_id}/panelists",
                          json={"name": name, "email": email},
                          headers={"Authorization": f"Bearer {self.organizer_key}"})  # fmt: skip
        resp.raise_for_status()
        return str(resp.json()["join_url"])

    def register_to(self, webinar_id: str, name: str, email: str) -> str:
        resp = httpx.post(f"{self.registry_url}/v1/webinars/{webinar_id}/registrations",
                          json={"name": name, "email": email})  # fmt: skip
        resp.raise_for_status()
        return str(resp.json()["join_url"])

    def register(self, name: str, email: str) -> str:
        return self.register_to(self.webinar_id, name, email)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    names = ("REGISTRY_PORT", "SIGNALING_PORT", "CHAT_PORT", "RESTREAM_PORT")
    ports = {k: str(free_port()) for k in names}
    data_dir = tmp_path_factory.mktemp("devstack")
    env = {**os.environ, **ports, "MEDIA_HTTP_PORT": str(free_port()),
           "NATS_URL": f"nats://127.0.0.1:{free_port()}",
           "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
           "DEVSTACK_DATA": str(data_dir)}  # fmt: skip
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = open(ARTIFACTS / "web-stack.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "scripts.devstack"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    lines: list[str] = []
    assert proc.stdout
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        log.write(line)
        if line.startswith("Press Ctrl-C"):
            break
    out = "".join(lines)
    match = re.search(r"Demo webinar (\w+) is ready", out)
    assert match, "make run did not print its links:\n" + out[-3000:]
    links = dict(re.findall(r"^\s+(host|panelist|attendee):\s+(\S+)$", out, re.M))
    key = re.search(r"organizer key: (\S+)", out)

    def keep_logging() -> None:
        for rest in proc.stdout:  # type: ignore[union-attr]
            log.write(rest)
            log.flush()

    threading.Thread(target=keep_logging, daemon=True).start()
    try:
        yield Platform(f"http://127.0.0.1:{ports['SIGNALING_PORT']}",
                       f"http://127.0.0.1:{ports['REGISTRY_PORT']}", key.group(1) if key else "",
                       match.group(1), links, data_dir)  # fmt: skip
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
