"""Throwaway redis-server processes for the Redis tests: a single server and a cluster.

Tests that kill, restart or reconfigure Redis never touch the shared server; they
start their own from the ``redis-server`` binary on free loopback ports, in a
temporary directory, and stop it afterwards. Without the binary they skip, or
fail under ``EXQUEUE_REQUIRE_SERVICES=1``. This module holds no tests itself.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import services

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


def require_binaries() -> tuple[str, str]:
    """The paths of redis-server and redis-cli; skip (or fail under CI) without them."""
    if REDIS_SERVER is None or REDIS_CLI is None:
        message = "redis-server/redis-cli not on PATH: install Redis to run these tests"
        if services.REQUIRED:
            pytest.fail(message + " (EXQUEUE_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    return REDIS_SERVER, REDIS_CLI


def free_port() -> int:
    """A loopback port that is free now, whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair found")


class RedisServer:
    """One redis-server process on its own port and directory."""

    def __init__(self, directory: Path, *args: str, port: int | None = None) -> None:
        self.binary, self.cli = require_binaries()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
            *self.args,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        self._wait_until_answering()
        return self

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited: {log}")
            done = subprocess.run(
                [self.cli, "-p", str(self.port), "ping"], capture_output=True, text=True
            )
            # While loading the AOF, Redis answers -LOADING, not PONG.
            if done.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed beyond what the server already wrote."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()


class RedisClusterProcesses:
    """A three-master Redis Cluster on loopback, built with ``redis-cli --cluster create``."""

    def __init__(self, directory: Path) -> None:
        self.nodes = [
            RedisServer(
                directory / f"node{i}",
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000",
                "--appendonly", "no",
            )
            for i in range(3)
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0?cluster=true"

    def start(self) -> RedisClusterProcesses:
        for node in self.nodes:
            node.start()
        cli = self.nodes[0].cli
        subprocess.run(
            [cli, "--cluster", "create"]
            + [f"127.0.0.1:{node.port}" for node in self.nodes]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 30
        for node in self.nodes:
            while True:
                info = subprocess.run(
                    [cli, "-p", str(node.port), "cluster", "info"], capture_output=True, text=True
                ).stdout
                if "cluster_state:ok" in info:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster did not become ready: {info}")
                time.sleep(0.1)
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


def cluster_processes(directory: Path) -> Iterator[RedisClusterProcesses]:
    """Body of a fixture: start a cluster, yield it, stop it."""
    cluster = RedisClusterProcesses(directory)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
