"""A throwaway PostgreSQL server on loopback for tests that share an Optuna study between processes.

`postgres_url` initdb's a fresh cluster in a temporary folder, starts it on 127.0.0.1 at a free port and
yields a SQLAlchemy URL. Where PostgreSQL or its Python driver is missing, or the server will not start,
the tests that ask for it skip with the reason; with CNNFIT_REQUIRE_POSTGRES set (CI) they fail instead.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"  # Debian/Ubuntu: server binaries off PATH, one folder per major version
PG_TOOLS = ("initdb", "pg_ctl", "postgres")
PG_USER = "cnnfit"  # superuser of the throwaway cluster; trust auth, no password
PG_DB = "cnnfit"
START_TIMEOUT = 30  # seconds for the server to accept connections
# a server nobody keeps needs no durability and little memory; initdb + start + CREATE DATABASE take ~1.2 s this way
PG_CONF = """
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 40
"""


def _has_tools(folder: Path) -> bool:
    return all(os.access(folder / tool, os.X_OK) for tool in PG_TOOLS)


def _version_key(folder: str) -> tuple[int, ...]:
    """'/usr/lib/postgresql/15/bin' -> (15,); '9.6' -> (9, 6); so 15 sorts above 9.6."""
    name = Path(folder).parent.name
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def find_pg_bin() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: from PATH first, else the newest under PG_BIN_GLOB."""
    initdb = shutil.which("initdb")
    if initdb:
        # PATH may hold symlinks (/usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb); pg_ctl must match
        folder = Path(initdb).resolve().parent
        if _has_tools(folder):
            return folder
    for folder in sorted(glob.glob(PG_BIN_GLOB), key=_version_key, reverse=True):
        if _has_tools(Path(folder)):
            return Path(folder)
    return None


def _unavailable(reason: str):
    if os.environ.get("CNNFIT_REQUIRE_POSTGRES"):
        pytest.fail(f"CNNFIT_REQUIRE_POSTGRES is set but {reason}", pytrace=False)
    pytest.skip(reason)


def _driver() -> tuple[str, object]:
    """SQLAlchemy dialect name and the imported DB-API module: psycopg2, else psycopg 3."""
    with contextlib.suppress(ImportError):
        import psycopg2

        return "psycopg2", psycopg2
    with contextlib.suppress(ImportError):
        import psycopg

        return "psycopg", psycopg
    _unavailable("psycopg2 not installed (pip install psycopg2-binary)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> dict:
    """subprocess kwargs that run the server tools as a user PostgreSQL accepts: it refuses to run as root."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return {}
    import pwd  # POSIX only

    try:
        pg = pwd.getpwnam("postgres")
    except KeyError:
        _unavailable("running as root and no 'postgres' user to run the server as; run the tests as a normal user")
    return {"user": pg.pw_uid, "group": pg.pw_gid, "extra_groups": []}


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def _connect(driver, port: int, dbname: str):
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            return driver.connect(host="127.0.0.1", port=port, user=PG_USER, dbname=dbname, connect_timeout=5)
        except driver.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="session")
def postgres_url():
    """`postgresql+psycopg2://cnnfit@127.0.0.1:PORT/cnnfit` (`+psycopg` with psycopg 3) on a fresh server.

    The server is stopped and its folder deleted when the test session ends.
    """
    bin_dir = find_pg_bin()
    if bin_dir is None:
        _unavailable("PostgreSQL not installed (Debian: apt install postgresql)")
    dialect, driver = _driver()
    as_user = _server_user()

    # under /tmp, not pytest's basetemp: a unix socket path must stay under ~100 chars, and when root hands the
    # folder to 'postgres', pytest's 0700 /tmp/pytest-of-root would block it
    root = Path(tempfile.mkdtemp(prefix="cnnfit-pg-"))
    if as_user:
        os.chown(root, as_user["user"], as_user["group"])
    data, log = str(root / "data"), root / "server.log"
    port = _free_port()
    run = dict(cwd=root, capture_output=True, text=True, timeout=120, check=True, **as_user)
    try:
        subprocess.run([str(bin_dir / "initdb"), "-D", data, "-U", PG_USER, "-A", "trust", "-E", "UTF8", "--no-locale",
                        "--no-sync"], **run)
        with open(Path(data) / "postgresql.conf", "a") as conf:  # appending keeps the file's owner
            conf.write(PG_CONF + f"listen_addresses = '127.0.0.1'\nport = {port}\n"
                       f"unix_socket_directories = '{root}'\n")
        subprocess.run([str(bin_dir / "pg_ctl"), "start", "-D", data, "-l", str(log), "-w", "-t", str(START_TIMEOUT)],
                       **run)
        conn = _connect(driver, port, "postgres")
        conn.autocommit = True  # CREATE DATABASE refuses to run inside a transaction
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {PG_DB}")
        conn.close()
    except (OSError, subprocess.SubprocessError, driver.Error) as e:
        output = getattr(e, "stderr", None) or ""
        reason = f"PostgreSQL in {bin_dir} did not start: {e}\n{output}\nserver log:\n{_log_tail(log)}"
        _stop(bin_dir, data, run)
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(reason)

    yield f"postgresql+{dialect}://{PG_USER}@127.0.0.1:{port}/{PG_DB}"

    _stop(bin_dir, data, run)
    shutil.rmtree(root, ignore_errors=True)


def _stop(bin_dir: Path, data: str, run: dict) -> None:
    if not (Path(data) / "postmaster.pid").exists():  # never started, or already gone
        return
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        # fast: roll back open sessions (a test's pooled connections) instead of waiting for them to close
        subprocess.run([str(bin_dir / "pg_ctl"), "stop", "-D", data, "-m", "fast", "-w"], **run)
