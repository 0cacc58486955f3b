"""A private PostgreSQL server for the tests, from the binaries ``pgserver`` ships.

pgserver's own start-up listens on a unix socket with no password at all; the
tests need TCP and a password (a wrong one must be refused, and its text must
not come back), and some need to stop and start the server under a running
tokengrpc. So this runs ``initdb`` and ``pg_ctl`` from its binaries directly.

PostgreSQL refuses to run as root. As root (CI, a fresh machine) the server
runs as ``nobody``, which exists on every Linux: its directory is made for it
in ``/tmp`` (``pytest``'s own temp dirs are private to root), and so is a copy
of the binaries, since the clone (and its ``.venv``) may sit where ``nobody``
cannot enter: a ``mktemp -d`` directory, ``/root``, a 0700 home.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import functools
import importlib.util
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# Found, not imported: importing pgserver sets up locks and dirs of its own.
_SPEC = importlib.util.find_spec("pgserver")
assert _SPEC is not None, "pgserver is a dev dependency"
assert _SPEC.origin is not None
#: pgserver's PostgreSQL installation (bin, lib, share), inside the clone's venv.
INSTALL = Path(_SPEC.origin).parent / "pginstall"
#: The superuser's password in every test server (never a real secret).
PASSWORD = "pg-test-Secret-7f3a"
USER = "postgres"
#: Runs the server when the tests run as root.
_UNPRIVILEGED = "nobody"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _chown_tree(root: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for path in (root, *root.rglob("*")):
        os.lchown(path, entry.pw_uid, entry.pw_gid)


@functools.cache
def binaries_for(user: str | None, install: Path = INSTALL) -> Path:
    """The ``bin`` directory ``user`` runs the server from: pgserver's own for
    ourselves; for another user, a copy in a directory made for it (once per
    process, removed at exit), whatever the modes on the way to the venv."""
    if user is None:
        return install / "bin"
    directory = Path(tempfile.mkdtemp(prefix="tokengrpc-pgbin-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    # The layout stays: the binaries find lib/ and share/ relative to themselves,
    # and the wheel's own libraries (libpq) by an rpath to site-packages/pgserver.libs.
    package = install.parent
    copy = directory / package.name / install.name
    shutil.copytree(install, copy, symlinks=True, ignore=shutil.ignore_patterns("include"))
    libraries = package.parent / f"{package.name}.libs"
    if libraries.is_dir():
        shutil.copytree(libraries, directory / libraries.name, symlinks=True)
    _chown_tree(directory, user)
    return copy / "bin"


class StartFailed(RuntimeError):
    """``pg_ctl start`` failed; the message holds the end of this start's log."""

    def __init__(self, port: int, told: str) -> None:
        super().__init__(f"PostgreSQL did not start on port {port}:\n{told}")
        self.port_taken = _PORT_TAKEN in told


#: The log line of a port another process took between the probe and the start.
_PORT_TAKEN = "could not bind"
#: Fresh ports tried before a start is given up (the free port is only probed:
#: any process may take it before PostgreSQL binds it).
_PORT_TRIES = 3


@dataclass
class PgServer:
    """One running server: ``url(db)`` to reach a database on it."""

    directory: Path
    port: int
    user: str | None
    binaries: Path
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def url(self, database: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [str(self.binaries / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            timeout=timeout,
            user=self.user,
            cwd=self.directory,
        )

    def start(self) -> None:
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.directory}"
            # A test server: durability across a power cut is not what is tested.
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=300"
            " -c lc_messages=C"  # the log's words are matched (_PORT_TAKEN)
        )
        log = self.directory / "log"
        # pg_ctl appends to the log: this start's lines are the ones after it.
        before = log.stat().st_size if log.exists() else 0
        try:
            self._run("pg_ctl", "-D", str(self.data), "-w", "-l", str(log), "-o", options, "start")
        except subprocess.SubprocessError as failed:
            # pg_ctl says only "could not start server": the reason is in the log
            # (or, when it could not write one, in what pg_ctl itself printed).
            told = log.read_bytes()[before:].decode(errors="replace") if log.exists() else ""
            printed = getattr(failed, "stderr", None) or b""
            raise StartFailed(
                self.port,
                told[-2000:] or printed.decode(errors="replace")[-2000:] or "(nothing said)",
            ) from failed

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", mode, "stop")

    @property
    def admin_url(self) -> str:
        return self.url()

    def new_database(self) -> str:
        """A fresh, empty database's URL (one per test, so tests cannot see each other)."""
        return _create_database(self.url(), f"t_{os.getpid()}_{next(self._numbers)}")


def start_server(install: Path = INSTALL) -> PgServer:
    """initdb and start a server in a new temp dir, on a free port, with a password,
    from the PostgreSQL installed in ``install``."""
    user = _UNPRIVILEGED if os.geteuid() == 0 else None
    directory = Path(tempfile.mkdtemp(prefix="tokengrpc-pg-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    (directory / "pwfile").write_text(PASSWORD + "\n")
    if user is not None:
        os.chown(directory / "pwfile", entry.pw_uid, entry.pw_gid)
    server: PgServer | None = None
    try:
        server = PgServer(directory, _free_port(), user, binaries_for(user, install))
        server._run(
            "initdb", "-D", str(server.data), "-U", USER, "--pwfile", str(directory / "pwfile"),
            "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8",
            "--no-instructions",
            "--no-sync",  # a test server's files need not reach the disk
        )  # fmt: skip
        for tries_left in reversed(range(_PORT_TRIES)):
            try:
                server.start()
                break
            except StartFailed as failed:
                if tries_left == 0 or not failed.port_taken:
                    raise
                server.port = _free_port()
    except BaseException:
        if server is not None:  # a start that timed out may still be coming up
            with contextlib.suppress(subprocess.SubprocessError):
                server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return server


def remove_server(server: PgServer) -> None:
    # Immediate: no shutdown checkpoint writing out every database the
    # session made (gigabytes by the end of it), for files deleted next.
    with contextlib.suppress(subprocess.SubprocessError):
        server.stop("immediate")
    shutil.rmtree(server.directory, ignore_errors=True)


class External:
    """The server named by ``TOKENGRPC_TEST_DATABASE_URL``: fresh databases on it."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._numbers = itertools.count(1)

    @property
    def admin_url(self) -> str:
        return self._url

    def new_database(self) -> str:
        return _create_database(self._url, f"t_{os.getpid()}_{next(self._numbers)}")


class Databases:
    """A fresh, empty database for each test, made while the test before it ran
    (making one is a fifth of a second of the server copying its template), and
    dropped once the test is done with it, both on a thread of their own.

    Only for the session's server: the thread's connections are its own,
    never counted by a test that watches ``pg_stat_activity`` by application.
    """

    def __init__(self, server: PgServer | External) -> None:
        self._server = server
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "databases")
        self._next = self._thread.submit(server.new_database)

    def take(self) -> str:
        url = self._next.result(timeout=60)
        self._next = self._thread.submit(self._server.new_database)
        return url

    def give_back(self, url: str) -> None:
        """Drop it (a test's connections left open are ended: it is over)."""
        name = urlsplit(url).path.lstrip("/")
        self._thread.submit(_execute, self._server.admin_url, f"DROP DATABASE {name} WITH (FORCE)")

    def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)


def _create_database(server_url: str, name: str) -> str:
    """Create database ``name`` (dropping a leftover of that name) through ``server_url``."""
    _execute(server_url, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}")
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path="/" + name))


def _execute(server_url: str, *statements: str) -> None:
    """Run ``statements`` through ``server_url``, over the driver the service uses:
    no client binary to spawn, or to crash."""
    import asyncio

    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(server_url)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    # In a thread of its own: a fixture may be set up while the test's loop runs.
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, run()).result(timeout=60)
