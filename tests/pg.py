"""A real PostgreSQL server on loopback for the storage tests (started and stopped by the tests)."""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PASSWORD = "mf-s3cret-pw"


def _bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (make test does it)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """initdb + pg_ctl in a private folder, listening on 127.0.0.1 only, password (scram) auth."""

    def __init__(self) -> None:
        self.bin = _bin()
        self.root = Path(tempfile.mkdtemp(prefix="mfsearch-pg-"))
        os.chmod(self.root, 0o755)
        self.data = self.root / "data"
        self.port = _free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            self.as_user = ["runuser", "-u", "postgres", "--"]
            self.data.mkdir()
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chown(self.data, pw.pw_uid, pw.pw_gid)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        os.chmod(pwfile, 0o644)
        self._run("initdb", "-D", str(self.data), "-U", "mf", "--pwfile", str(pwfile), "-A", "scram-sha-256",
                  "--no-sync", "-E", "UTF8")
        self.start()
        atexit.register(self.close)  # also when a test run is interrupted before the fixture's teardown
        env = dict(os.environ, PGPASSWORD=PASSWORD)
        subprocess.run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "mf", "mfsearch"],
                       check=True, env=env, capture_output=True, timeout=60)

    @property
    def url(self) -> str:
        return f"postgresql://mf:{PASSWORD}@127.0.0.1:{self.port}/mfsearch"

    def create_role(self, user: str, password: str) -> str:
        """A login role with its own database; its URL with ``password`` written raw (not percent-encoded)."""
        def quote(s: str) -> str:
            return "'" + s.replace("'", "''") + "'"

        env = dict(os.environ, PGPASSWORD=PASSWORD)
        psql = [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "mf", "-d", "mfsearch",
                "-v", "ON_ERROR_STOP=1", "-c"]
        for sql in (f'CREATE ROLE "{user}" LOGIN PASSWORD {quote(password)}',
                    f'CREATE DATABASE "{user}" OWNER "{user}"'):
            subprocess.run([*psql, sql], check=True, env=env, capture_output=True, timeout=60)
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{user}"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        if not self.root.exists():
            return
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
