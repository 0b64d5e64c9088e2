"""`make run` on a machine without NATS or Redis at the given URLs: it starts embedded
ones, every service, prints working links, and Ctrl-C stops every process."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from services.common.tokens import TokenVerifier
from tests.infra import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_devstack_prints_working_links_and_stops_cleanly(tmp_path):
    registry_port = free_port()
    env = {**os.environ, "NATS_URL": f"nats://127.0.0.1:{free_port()}",
           "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "DEVSTACK_DATA": str(tmp_path),
           "REGISTRY_PORT": str(registry_port), "SIGNALING_PORT": str(free_port()),
           "CHAT_PORT": str(free_port()), "MEDIA_HTTP_PORT": str(free_port()),
           "RESTREAM_PORT": str(free_port())}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.devstack"], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        assert proc.stdout
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "devstack exited early:\n" + "".join(lines)
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        out = "".join(lines)
        assert "starting embedded NATS" in out and "starting embedded Redis" in out
        wid = re.search(r"Demo webinar (\w+) is ready", out).group(1)
        links = dict(re.findall(r"^\s+(host|panelist|attendee):\s+(\S+)$", out, re.M))
        public = (tmp_path / "keys" / "join-public.pem").read_text()
        roles = {
            k: TokenVerifier(public).verify(v.split("token=")[1], wid).role
            for k, v in links.items()
        }
        assert roles == {"host": "host", "panelist": "panelist", "attendee": "attendee"}
        resp = httpx.get(f"http://127.0.0.1:{registry_port}/v1/webinars/{wid}")
        assert resp.status_code == 200 and resp.json()["title"] == "Demo webinar"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    time.sleep(0.5)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
