"""A real PostgreSQL server for the team-mode tests: Debian's binaries, a throwaway cluster, 127.0.0.1 only.

`pg_server` (session) runs `initdb` and `pg_ctl` as the `postgres` user (we run as root; PostgreSQL refuses
root) in a temporary folder owned by it, on a free 127.0.0.1 port with its unix socket in that folder, and
stops it with `pg_ctl stop -m immediate` at the end, also when a test or the start fails. Logins over TCP
need a password (scram), so the URLs carry one, as team mode's do. `pg_url` gives each test a new database
of that server; `PgServer.restart()` stops and starts it (connections made before are then broken).
Tests that use these are skipped, saying why, when the PostgreSQL binaries or psycopg are missing: `.ci/run`
installs both. It does not install anything, and it never touches a cluster of the machine's own.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PASSWORD = "s3cret-Pg-pw"  # the tests check that this never shows in a message
USER = "postgres"
_databases = itertools.count(1)


def pg_bin() -> Path | None:
    """The newest PostgreSQL server binaries of Debian's packages (/usr/lib/postgresql/N/bin), if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def skip_reason() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None."""
    if pg_bin() is None:
        return "PostgreSQL is not installed (Debian's `postgresql`; .ci/run installs it)"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return "there is no `postgres` user to run PostgreSQL as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (the `team` extra; make install installs it)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One throwaway cluster: `start`, `stop`, `restart`, `new_database`, `url(database)`."""

    def __init__(self, folder: Path, bin_dir: Path) -> None:
        self.folder, self.bin = folder, bin_dir
        self.data, self.log = folder / "data", folder / "server.log"
        self.port = free_port()

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", USER, "--", *args], capture_output=True, text=True, timeout=120,
                              check=check, cwd=self.folder)

    def init(self) -> None:
        pwfile = self.folder / "pw"
        pwfile.write_text(PASSWORD + "\n")
        shutil.chown(pwfile, USER)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile),
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        pwfile.unlink()

    def start(self) -> None:
        # no fsync: a test cluster is thrown away. Commits are still written out before they return (not
        # synchronous_commit=off), so a restart (`pg_ctl stop -m immediate`, as a crash) keeps them
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off -c max_connections=200")
        done = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                         "-w", "-t", "60", "start", check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {done.stdout}{done.stderr}\n{log}")

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def restart(self) -> None:
        """Stop at once (as a crash would) and start again on the same port."""
        self.stop()
        self.start()

    def url(self, database: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"rag_test_{os.getpid()}_{next(_databases)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            # a language's collation (ICU English), as a real server's database often has: ids must still sort
            # in byte order, as SQLite and Python sort them
            conn.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
        return self.url(name)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server for the whole session (skipped, saying why, where there is none)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="rag-pg-"))
    shutil.chown(folder, USER, USER)
    server = PgServer(folder, pg_bin())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url(pg_server: PgServer) -> str:
    """The URL (with its password) of a database of the session's server; tests keep apart by collection name
    (a schema each), as team mode's collections do. `pg_server.new_database()` gives one of a test's own."""
    return pg_server.new_database()
