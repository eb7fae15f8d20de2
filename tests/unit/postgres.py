"""A real PostgreSQL server for the results database's tests: Debian's, in a temporary
directory, listening only on a unix socket there, stopped with `pg_ctl stop -m fast`.

initdb refuses to run as root: as root, the cluster belongs to the `postgres` system
user (Debian's package creates it) and its commands run through `runuser`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

START_TIMEOUT = 60  # s for pg_ctl start and stop


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda path: int(path.parent.parent.name)
                   if path.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


class PostgresServer:
    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.as_postgres = os.geteuid() == 0
        # Not under pytest's tmp_path: its parents are private to root.
        self.root = Path(tempfile.mkdtemp(prefix="xenhil-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.user = "postgres" if self.as_postgres else pwd.getpwuid(os.geteuid()).pw_name
        self._databases = 0
        if self.as_postgres:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user,
                  "--no-sync", "-E", "UTF8")
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w",
                  "-t", str(START_TIMEOUT),
                  "-o", f"-c listen_addresses='' -k {self.root} -c fsync=off")

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bin_dir / tool), *args]
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT + 30,
                              check=False, cwd=self.root)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr}{log}")

    def new_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        self._databases += 1
        name = f"xenhil_{self._databases}"
        with psycopg.connect(host=str(self.root), user=self.user, dbname="postgres",
                             autocommit=True, connect_timeout=10) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return f"postgresql+psycopg://{self.user}@/{name}?host={self.root}"

    def stop(self) -> None:
        """Stop the server if it runs, and remove its directory."""
        try:
            if not (self.data / "postmaster.pid").exists():
                return
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w",
                      "-t", str(START_TIMEOUT))
        except (RuntimeError, subprocess.TimeoutExpired):
            # The postmaster's own PID, from its pid file: never a process we did not start.
            pid_file = self.data / "postmaster.pid"
            if pid_file.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            raise
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
