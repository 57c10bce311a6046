"""The quick-start path: `patron serve --demo` as a real process, as a new developer runs it."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from domain.metadata import Role
from tests.conftest import TEST_SECRET
from tests.graphql import token_for

REPO = Path(__file__).resolve().parent.parent
# `serve --demo` first simulates a year of commerce: about 40 s on SQLite, two to three
# minutes on PostgreSQL (a round trip per query), more on a busy CI machine.
STARTUP_TIMEOUT = 420.0
SHUTDOWN_TIMEOUT = 10.0
PORT_ATTEMPTS = 3


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    output: Path

    def read_output(self) -> str:
        return self.output.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, as a process manager would; the exit status once it has exited."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=SHUTDOWN_TIMEOUT)


@contextmanager
def patron_serve(
    database_url: str, workdir: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """Run `patron serve` and wait until /healthz answers; always kill it afterwards.

    The free port is only free when _free_port() looks: another test worker (or anything
    else on the machine) can take it before the server binds it, so a server that exits
    with "address already in use" is started again on another port.
    """
    if env is None:
        env = {**os.environ, "PATRON_SECRET_KEY": TEST_SECRET}
    env = {**env, "PYTHONUNBUFFERED": "1"}
    env.pop("PATRON_DATABASE_URL", None)
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = _free_port()
        output = workdir / f"serve-{port}.log"
        command = [
            sys.executable, "-m", "api.cli", "serve",
            "--port", str(port), "--database-url", database_url, *extra,
        ]
        with output.open("wb") as sink:
            process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT
            )
        server = Server(process, f"http://127.0.0.1:{port}", output)
        try:
            try:
                _wait_until_healthy(server)
            except AssertionError:
                lost_port = "address already in use" in server.read_output().lower()
                if process.poll() is not None and lost_port and attempt < PORT_ATTEMPTS:
                    continue
                raise
            yield server
            return
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=SHUTDOWN_TIMEOUT)


def _wait_until_healthy(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(
                f"patron serve exited with {server.process.returncode}:\n{server.read_output()}"
            )
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(
        f"patron serve did not answer /healthz within {STARTUP_TIMEOUT}s:\n{server.read_output()}"
    )


def _members_total(server: Server) -> int | None:
    response = httpx.post(
        f"{server.base_url}/graphql",
        json={"query": "{ members(first: 1) { totalCount } }"},
        headers={"Authorization": f"Bearer {token_for(Role.ADMIN, 'admin-1')}"},
        timeout=5.0,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert not body.get("errors"), body["errors"]
    return int(body["data"]["members"]["totalCount"])


def test_the_quick_start_serves_graphiql_and_fifty_demo_members(
    database_url: str, tmp_path: Path
) -> None:
    with patron_serve(database_url, tmp_path, "--demo") as server:
        ready = httpx.get(f"{server.base_url}/readyz", timeout=5.0)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {
            "database": "ok", "migrations": "current", "projections": "running",
        }

        ide = httpx.get(f"{server.base_url}/graphql", headers={"Accept": "text/html"})
        assert ide.status_code == 200
        assert "graphiql" in ide.text.lower()

        deadline = time.monotonic() + 10.0
        total = _members_total(server)
        while total != 50 and time.monotonic() < deadline:
            time.sleep(0.2)
            total = _members_total(server)
        assert total == 50, server.read_output()

        # uvicorn shuts down gracefully, then re-raises the captured SIGTERM.
        assert server.stop() in (0, -signal.SIGTERM), server.read_output()
    output = server.read_output()
    assert "Application shutdown complete" in output
    assert "GraphiQL: http://" in output


def test_serve_demo_does_not_seed_a_database_twice(database_url: str, tmp_path: Path) -> None:
    with patron_serve(database_url, tmp_path, "--demo") as first:
        first.stop()
    with patron_serve(database_url, tmp_path, "--demo") as second:
        assert _members_total(second) == 50
        second.stop()
    assert "already has events; not seeding" in second.read_output()


def test_serve_on_a_fresh_sqlite_file_generates_a_private_signing_key(tmp_path: Path) -> None:
    database = tmp_path / "fresh" / "patron.db"
    env = {k: v for k, v in os.environ.items() if k != "PATRON_SECRET_KEY"}
    with patron_serve(f"sqlite:///{database}", tmp_path, env=env) as server:
        assert httpx.get(f"{server.base_url}/readyz", timeout=5.0).status_code == 200
        server.stop()
    key_file = database.with_name("patron.db.secret")
    assert key_file.exists(), server.read_output()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_text().strip()) >= 32
    lines = [line for line in server.read_output().splitlines() if "signing key" in line]
    assert any(str(key_file) in line for line in lines), server.read_output()
