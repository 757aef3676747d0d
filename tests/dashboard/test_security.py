"""Authentication, the command's refusal to bind openly, paging by seq, mounting."""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import exqueue
from exqueue.dashboard import Auth, create_app, is_loopback
from tests.dashboard.conftest import client_for
from tests.dashboard.helpers import FINE, fill
from tests.support.cli import cli


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {raw}"}


def test_auth_from_the_environment() -> None:
    assert Auth.from_env({}) is None
    assert Auth.from_env({"EXQUEUE_DASHBOARD_TOKEN": "t"}) == Auth(token="t")
    both = {"EXQUEUE_DASHBOARD_USER": "ops", "EXQUEUE_DASHBOARD_PASSWORD": "pw"}
    assert Auth.from_env(both) == Auth(user="ops", password="pw")
    with pytest.raises(ValueError, match="both"):
        Auth.from_env({"EXQUEUE_DASHBOARD_USER": "ops"})
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
    assert not is_loopback("example.org")


def test_every_request_is_authenticated(tmp_path: Path) -> None:
    queue = exqueue.Queue(f"sqlite:///{tmp_path / 'jobs.db'}")
    fill(queue, dead=1, waiting=1)
    app = create_app(queue, auth=Auth(token="s3cret", user="ops", password="pw"))
    client = client_for(app)
    for path in ["/", "/jobs", "/api/counts", "/static/dashboard.js"]:
        refused = client.get(path)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"].startswith("Basic")
    assert client.get("/", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/", headers=basic("ops", "nope")).status_code == 401
    assert client.get("/", headers=basic("ops", "pw")).status_code == 200
    assert client.get("/", headers={"authorization": "Bearer s3cret"}).status_code == 200
    # A browser gives the token as the password of basic auth.
    page = client.get("/jobs?state=dead", headers=basic("", "s3cret"))
    assert page.status_code == 200
    dead = re.findall(r'href="/job/([0-9a-f]{32})"', page.text)
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert dead and token
    done = client.post(
        "/actions/delete",
        data={"job_id": dead[0], "csrf": token.group(1)},
        headers=basic("ops", "pw"),
    )
    assert done.status_code == 200 and "deleted job" in done.text
    queue.close()


def test_pages_by_seq(tmp_path: Path) -> None:
    queue = exqueue.Queue(f"sqlite:///{tmp_path / 'jobs.db'}")

    @queue.worker(name=FINE)
    def build(n: int) -> None: ...

    ids = [call for call in queue.enqueue_many([build.call(n) for n in range(120)])]
    client = client_for(create_app(queue))
    seen: list[str] = []
    url = "/jobs?worker=" + FINE
    while url:
        page = client.get(url).text
        found = re.findall(r'href="/job/([0-9a-f]{32})"', page)
        assert len(found) <= 50
        seen += found
        following = re.search(r'href="([^"]+)" rel="next"', page)
        url = following.group(1).replace("&amp;", "&") if following else ""
    assert seen == ids
    queue.close()


def test_mounts_in_another_starlette_app(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    queue = exqueue.Queue(f"sqlite:///{tmp_path / 'jobs.db'}")
    filled = fill(queue, dead=1, waiting=0)
    outer = Starlette(routes=[Mount("/ops/jobs", create_app(queue))])
    client = client_for(outer)
    page = client.get("/ops/jobs/jobs?state=dead")
    assert page.status_code == 200
    assert f'href="/ops/jobs/job/{filled.dead[0]}"' in page.text
    assert 'src="/ops/jobs/static/dashboard.js"' in page.text
    assert 'action="/ops/jobs/actions/retry"' in page.text
    assert client.get("/ops/jobs/static/dashboard.js").status_code == 200
    queue.close()


def test_command_refuses_an_open_bind_without_credentials(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    exqueue.Queue(url).close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXQUEUE_DASHBOARD_")}
    refused = cli("dashboard", "--storage", url, "--host", "0.0.0.0", env=env)
    assert refused.returncode == 1
    assert "refusing to serve" in refused.stderr and "EXQUEUE_DASHBOARD_TOKEN" in refused.stderr
    missing = cli("dashboard", "--storage", f"sqlite:///{tmp_path / 'nope.db'}", env=env)
    assert missing.returncode == 1 and not (tmp_path / "nope.db").exists()


def test_command_serves_the_dashboard(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    queue = exqueue.Queue(url)
    fill(queue, dead=1, waiting=1)
    queue.close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "EXQUEUE_DASHBOARD_TOKEN": "tok"}
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exqueue",
            "dashboard",
            "--storage",
            url,
            "--port",
            str(port),
            "--read-only",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        import httpx

        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx.get(
                    f"http://127.0.0.1:{port}/", headers={"authorization": "Bearer tok"}
                )
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise
                time.sleep(0.1)
        assert answer.status_code == 200 and "read-only" in answer.text
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 401
    finally:
        child.terminate()
        child.wait(10)


def test_pause_and_resume_a_worker_type() -> None:
    from exqueue_memory import MemoryStorage

    queue = exqueue.Queue(MemoryStorage())
    if "pause" not in queue.storage.capabilities:
        pytest.skip("the memory store has no 'pause' capability on this branch (issue 15)")
    fill(queue, dead=1, waiting=2)
    client = client_for(create_app(queue))
    page = client.get("/").text
    assert re.search(rf'name="name" value="{re.escape(FINE)}">\s*<button[^>]*>Pause<', page)
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert token
    client.post("/actions/pause_worker", data={"name": FINE, "csrf": token.group(1)})
    assert FINE in queue.storage.paused()  # type: ignore[attr-defined]
    assert client.get("/api/counts").json()["workers"][FINE]["paused"] is True
    assert "Resume" in client.get("/").text
    client.post("/actions/resume_worker", data={"name": FINE, "csrf": token.group(1)})
    assert FINE not in queue.storage.paused()  # type: ignore[attr-defined]


def test_the_core_works_without_the_extra(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    exqueue.Queue(url).close()
    code = (
        "import sys\n"
        "for name in ('starlette', 'jinja2', 'uvicorn', 'multipart', 'python_multipart'):\n"
        "    sys.modules[name] = None  # as if not installed\n"
        "import exqueue, exqueue.cli, exqueue.dashboard\n"
        "try:\n"
        "    exqueue.dashboard.create_app(sys.argv[1])\n"
        "except ImportError as exc:\n"
        "    print('refused:', exc)\n"
        "sys.argv = ['exqueue', 'dashboard', '--storage', sys.argv[1]]\n"
        "exqueue.cli.run()\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code, url], capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 1, ran.stderr
    assert "refused: the dashboard needs its extra: pip install 'exqueue[dashboard]'" in ran.stdout
    assert "pip install 'exqueue[dashboard]'" in ran.stderr
