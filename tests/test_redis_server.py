"""jobq.testing.RedisServer: a real, private redis-server - started, spoken to with redis-py's
asyncio client, restarted with its data, and never left running. Every test is bounded in
time (asyncio.timeout, subprocess timeouts); the whole file takes a few seconds."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

import jobq.testing
from jobq.errors import InvalidConfigError
from jobq.testing import RedisServer, redis_server_path

ROOT = Path(__file__).resolve().parent.parent



@pytest.fixture
def aioredis(need: Callable[[str, str], ModuleType]) -> ModuleType:
    """redis-py's asyncio client (`redis.asyncio`), from the `dev` extra."""
    return need("redis.asyncio", "pip install -e '.[dev]'")


# Servers for async tests start in fixtures: starting blocks for a moment, and a test's loop
# (debug mode) should not be blocked by it.
@pytest.fixture
def redis_server(redis_server_installed: str) -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


_PASSWORD = 's3cret pa:ss@w/"1"'  # URL- and config-special characters, all handled


@pytest.fixture
def password_server(redis_server_installed: str) -> Iterator[RedisServer]:
    with RedisServer(password=_PASSWORD) as server:
        yield server


@pytest.fixture
def fsync_always_server(redis_server_installed: str) -> Iterator[RedisServer]:
    # appendfsync="always": each write is on disk before redis answers, so a restart right
    # after it finds it - no waiting out "everysec".
    with RedisServer(appendfsync="always") as server:
        yield server


def _alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (an exited child nobody reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _directory(pid: int) -> Path:
    """The working directory of process `pid`: redis-server's is its `--dir`."""
    return Path(f"/proc/{pid}/cwd").resolve()


def _command_line(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


async def test_set_get_then_stop_ends_the_process_and_removes_its_directory(
    redis_server: RedisServer, aioredis: ModuleType
) -> None:
    server = redis_server
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    async with asyncio.timeout(10):
        async with aioredis.from_url(server.url) as client:
            assert await client.ping() is True
            await client.set("greeting", b"hello")
            assert await client.get("greeting") == b"hello"
    pid, directory = server.pid, _directory(server.pid)
    assert _alive(pid) and directory.name.startswith("jobq-redis-")
    assert (directory / "appendonlydir").is_dir()  # append-only persistence is on
    server.stop()
    assert not _alive(pid) and not directory.exists()
    server.stop()  # safe twice
    assert repr(server) == "<RedisServer stopped appendfsync=everysec password=none>"
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url


async def test_a_password_server_refuses_a_client_without_it(
    password_server: RedisServer, aioredis: ModuleType
) -> None:
    exceptions = pytest.importorskip("redis.exceptions")
    server = password_server
    async with asyncio.timeout(10):
        anonymous = f"redis://127.0.0.1:{server.port}/0"
        async with aioredis.from_url(anonymous) as client:
            with pytest.raises(exceptions.AuthenticationError):
                await client.ping()
        wrong = f"redis://:wrong@127.0.0.1:{server.port}/0"
        async with aioredis.from_url(wrong) as client:
            with pytest.raises(exceptions.AuthenticationError):
                await client.ping()
        async with aioredis.from_url(server.url) as client:  # the password, URL-quoted
            assert await client.ping() is True
    # The password is in the URL (a secret, for the client), nowhere else: not in the repr
    # a notebook shows, not on the command line that any local user can read.
    assert repr(server) == "<RedisServer running appendfsync=everysec password=set>"
    assert "s3cret" not in repr(server) and str(server) == repr(server)
    cmdline = _command_line(server.pid)
    assert b"s3cret" not in cmdline and b"requirepass" not in cmdline


async def test_restart_keeps_the_port_and_what_was_written(
    fsync_always_server: RedisServer, aioredis: ModuleType
) -> None:
    server = fsync_always_server
    port, pid = server.port, server.pid
    async with asyncio.timeout(20):
        async with aioredis.from_url(server.url) as client:
            await client.set("kept", b"yes")
            entry = await client.xadd("jobs", {"id": "1", "payload": "p"})
        # Blocking for a moment (a stop and a start): off the loop, in a thread.
        assert await asyncio.to_thread(server.restart) is server
        assert server.port == port and server.pid != pid and not _alive(pid)
        async with aioredis.from_url(server.url) as client:
            assert await client.get("kept") == b"yes"
            assert await client.xrange("jobs") == [(entry, {b"id": b"1", b"payload": b"p"})]


def test_two_servers_at_once_get_their_own_port_and_directory(
    redis_server_installed: str,
) -> None:
    with RedisServer() as first, RedisServer(appendonly=False) as second:
        assert first.port != second.port and first.pid != second.pid
        dirs = {_directory(s.pid) for s in (first, second)}
        assert len(dirs) == 2
        assert repr(second) == "<RedisServer running appendonly=no password=none>"
        pid = second.pid
        assert second.start() is second and second.pid == pid  # start() is idempotent


def test_a_free_port_taken_before_redis_binds_it_is_tried_again(
    redis_server_installed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        taken = squatter.getsockname()[1]
        real_free_port = jobq.testing._free_port
        offers = iter([taken])
        monkeypatch.setattr(jobq.testing, "_free_port", lambda: next(offers, None)
                            or real_free_port())
        with RedisServer() as server:
            assert server.port != taken  # the second offer
        # Every offer taken: a named error, and nothing left behind.
        monkeypatch.setattr(jobq.testing, "_free_port", lambda: taken)
        server = RedisServer()
        with pytest.raises(RuntimeError, match=f"could not bind 127.0.0.1:{taken}"):
            server.start()
        assert not server.running


def test_a_server_that_will_not_start_shows_its_log(redis_server_installed: str) -> None:
    server = RedisServer()
    server._appendfsync = "sometimes"  # past the constructor's check, to make redis refuse
    with pytest.raises(RuntimeError, match=r"(?s)exited with status 1.*its log:.*appendfsync"):
        server.start()
    server.stop()
    with pytest.raises(InvalidConfigError, match="appendfsync must be one of"):
        RedisServer(appendfsync="sometimes")
    with pytest.raises(InvalidConfigError, match="password must be a non-empty string"):
        RedisServer(password="")


def test_a_missing_redis_server_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobq.testing.shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(FileNotFoundError, match="apt-get install -y redis-server"):
        redis_server_path()
    with pytest.raises(FileNotFoundError, match="apt-get install -y redis-server"):
        RedisServer().start()


_NEVER_STOPPED = textwrap.dedent("""
    import sys, time
    from jobq.testing import RedisServer
    server = RedisServer().start()           # never stopped: Python's clean-up must do it
    print(server.pid, flush=True)
    time.sleep(60)
""")


def test_a_ctrl_c_to_python_ends_its_redis_server_too(redis_server_installed: str) -> None:
    # The script leads its own process group, like a program in a terminal: a Ctrl-C
    # (SIGINT to the group) interrupts Python; redis-server, in a session of its own, does
    # not get it, and Python's exit clean-up (the finalizer) ends it.
    script = subprocess.Popen([sys.executable, "-c", _NEVER_STOPPED], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        assert script.stdout is not None
        pid = int(script.stdout.readline())
        assert _alive(pid) and os.getpgid(pid) != script.pid
        directory = _directory(pid)
        os.killpg(script.pid, signal.SIGINT)
        _, err = script.communicate(timeout=20)
    finally:
        if script.poll() is None:
            script.kill()
            script.communicate()
    assert b"KeyboardInterrupt" in err
    assert not _alive(pid) and not directory.exists()
