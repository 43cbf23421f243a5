"""Where a study lives: an Optuna storage URL opened (a SQLite file in the tune directory, or a database server that
several machines share), shown with its passwords starred, and the claim of a waiting trial by one process alone.

    storage = open_storage(local_url(tune_dir))      # sqlite:///<tune_dir>/study.db
    trial_id = claim(study, local_url(tune_dir))     # None when no trial waits
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cnnfit.errors import CnnfitError


def local_url(tune_dir: Path) -> str:
    """The SQLite storage of a study that names none: study.db in its tune directory."""
    return f"sqlite:///{tune_dir / 'study.db'}"


# the PyPI package that provides each SQLAlchemy driver module a storage URL may name
_DRIVERS = {"psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "pg8000": "pg8000", "pymysql": "pymysql",
            "MySQLdb": "mysqlclient", "asyncpg": "asyncpg"}


def shown_url(url: str) -> str:
    """A storage URL as logs and errors show it: its password, in the user part or a ?password= query, starred."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return "(an unreadable storage URL)"
    hidden = {k: "hidden" for k in parsed.query if "password" in k.lower()}
    return parsed.update_query_dict(hidden).render_as_string(hide_password=True)


def _secrets(url: str) -> list[str]:
    """The passwords a storage URL holds, so a driver's message that repeats one can have it starred."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    given = [parsed.password] + [v for k, v in parsed.query.items() if "password" in k.lower()]
    return [str(p) for value in given for p in ([value] if isinstance(value, str) else value or []) if p]


def open_storage(url: str) -> Any:
    """The Optuna RDBStorage at `url`, or a one-line error naming the missing driver, the bad URL or the dead server."""
    import optuna

    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    # several processes write one SQLite file: wait for its lock rather than fail
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except ImportError as exc:  # SQLAlchemy imports the URL's driver only now
            missing = exc.name or getattr(exc.__cause__, "name", None) or "the driver the URL names"  # optuna wraps it
            package = _DRIVERS.get(missing, missing)
            raise CnnfitError(f"the study storage {shown_url(url)} needs the Python package '{package}', which is "
                              f"not installed; pip install {package}, or name an installed driver in the URL") from None
        except ArgumentError as exc:
            raise CnnfitError(f"storage={shown_url(url)} is not a database URL ({exc}); use e.g. "
                              "postgresql://user@host/db or sqlite:///study.db") from None
        except SQLAlchemyError as exc:  # two machines starting at once both create the tables: one loses, retries
            if attempt == 4:
                why = str(exc).splitlines()[0]
                for secret in _secrets(url):
                    why = why.replace(secret, "***")
                raise CnnfitError(f"cannot open the study storage {shown_url(url)}: {why}; check the URL and that "
                                  "the database server is running") from None
            time.sleep(1 + attempt)


def claim(study: Any, url: str) -> int | None:
    """A waiting trial's id, now RUNNING for this process alone (the claim Optuna's own ask() makes); None when no
    trial waits."""
    if not url.startswith("sqlite:///"):  # a database server locks the row (SELECT ... FOR UPDATE)
        return study._pop_waiting_trial_id()
    from filelock import FileLock

    # SQLite has no row lock, and its Python driver reads outside a transaction: two processes can both read a trial
    # WAITING and both set it RUNNING, and one grid point runs twice. A lock file beside the database serializes it.
    with FileLock(url[len("sqlite:///"):] + ".claim.lock"):
        return study._pop_waiting_trial_id()


__all__ = ["claim", "local_url", "open_storage", "shown_url"]
