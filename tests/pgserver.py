"""A real PostgreSQL server for the shared-list tests (Debian's ``postgresql`` package).

``initdb`` once per session into a temporary folder (a template), then each server is a copy
of it started with ``postgres`` on a free loopback port (listen_addresses=127.0.0.1, its
socket in its own folder) and stopped by its PID. PostgreSQL refuses to run as root: as root
the server runs as ``nobody``, and the folders are given to it, then removed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

USER = "screener"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


def _owner() -> tuple[int, int] | None:
    """Whom the server runs as: nobody when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid


def _chown_tree(path: Path, owner: tuple[int, int] | None) -> None:
    if owner is None:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, *owner)
        for name in dirs + files:
            os.chown(os.path.join(root, name), *owner, follow_symlinks=False)


def _as_owner(owner: tuple[int, int] | None) -> dict[str, Any]:
    if owner is None:
        return {}
    return {"user": owner[0], "group": owner[1], "extra_groups": []}


def _running(pid: int) -> bool:
    """Whether ``pid`` is a process still running (a zombie is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class Template:
    """An initdb'd cluster to copy servers from."""

    folder: Path
    password: str

    @classmethod
    def make(cls) -> Template:
        """initdb into a new temporary folder (superuser ``screener``, SCRAM passwords)."""
        binaries = bin_dir()
        if binaries is None:
            raise RuntimeError("PostgreSQL is not installed (scripts/bootstrap installs it)")
        owner = _owner()
        base = Path(tempfile.mkdtemp(prefix="screener-pg-"))
        password = secrets.token_urlsafe(18)
        (base / "pw").write_text(password)
        data = base / "data"
        _chown_tree(base, owner)
        subprocess.run(
            [
                str(binaries / "initdb"),
                "-D",
                str(data),
                "-U",
                USER,
                "--auth=scram-sha-256",
                f"--pwfile={base / 'pw'}",
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **_as_owner(owner),
        )
        (base / "pw").unlink()
        return cls(base, password)

    def remove(self) -> None:
        """Remove the template's folder."""
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class PGServer:
    """One running (or stopped) server, a copy of the template."""

    template: Template
    folder: Path = field(init=False)
    port: int = field(init=False)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="screener-pgsrv-"))
        shutil.copytree(self.template.folder / "data", self.folder / "data", symlinks=True)
        (self.folder / "run").mkdir()
        _chown_tree(self.folder, _owner())
        self.port = free_port()

    @property
    def password(self) -> str:
        """The superuser's password."""
        return self.template.password

    def dsn(self, dbname: str = "postgres") -> str:
        """A DSN without the password."""
        return f"host=127.0.0.1 port={self.port} user={USER} dbname={dbname}"

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        """A synchronous connection for the test's own checks."""
        return psycopg.connect(self.dsn(dbname), password=self.password, **kwargs)

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it accepts connections."""
        binaries = bin_dir()
        assert binaries is not None
        log = (self.folder / "log").open("ab")
        self.proc = subprocess.Popen(
            [
                str(binaries / "postgres"),
                "-D",
                str(self.folder / "data"),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.folder / 'run'}",
                "-c",
                "fsync=off",
                "-c",
                "log_min_messages=warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            **_as_owner(_owner()),
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.folder / 'log').read_text()[-2000:]}")
            try:
                with self.connect(connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, how: signal.Signals = signal.SIGINT) -> None:
        """Stop by PID: SIGINT is a fast shutdown, SIGQUIT an immediate one (like a crash)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(how)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the server by its PIDs (the postmaster, then each of its processes), as a
        crash would leave it: no shutdown, no checkpoint; the next start recovers."""
        if self.proc is None:
            return
        pid = self.proc.pid
        children = []
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[1]) == pid:  # its parent is the postmaster
                children.append(int(stat.split("/")[2]))
        os.kill(pid, signal.SIGKILL)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        self.proc.wait(30)
        self.proc = None
        deadline = time.monotonic() + 30
        while any(_running(c) for c in children):  # no process of it left
            if time.monotonic() > deadline:
                raise RuntimeError("postgres's processes outlived SIGKILL")
            time.sleep(0.02)

    def create_database(self, name: str) -> str:
        """A new empty database; returns its DSN (no password)."""
        with self.connect(autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def remove(self) -> None:
        """Stop the server if it runs and remove its folder."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
