"""A storage URL carries a database password: it never reaches the output, and a URL that cannot be opened is
refused before the search makes its folder."""

import pytest

from cnnfit.cli import main
from cnnfit.tune.storage import shown_url
from tests.tune.conftest import postgres_url  # noqa: F401  (a PostgreSQL server for the session, or a skip)

QUICK = ["data=digits", "epochs=1", "model=simplecnn", "train.log_every=1000", "trials=1", "refit=false"]


@pytest.mark.parametrize("url, shown", [
    ("postgresql://me:S3cretPw@db.example:5432/runs", "postgresql://me:***@db.example:5432/runs"),
    ("postgresql://me@db.example/runs?password=S3cretPw&sslmode=require",
     "postgresql://me@db.example/runs?password=hidden&sslmode=require"),
    ("postgresql+psycopg2://me:p%40ss@db.example/runs", "postgresql+psycopg2://me:***@db.example/runs"),
    ("sqlite:////tmp/search/study.db", "sqlite:////tmp/search/study.db"),
])
def test_shown_urls_hide_every_password(url, shown):
    assert shown_url(url) == shown


def test_a_missing_driver_is_named_and_nothing_is_written(tmp_path, capsys):
    url = "postgresql+pg8000://me:S3cretPw@127.0.0.1:1/runs?password=0ther5ecret"
    code = main(["tune", *QUICK, f"project={tmp_path}", f"storage={url}"])
    out, err = capsys.readouterr()
    assert code == 2 and "pip install pg8000" in err and err.strip().count("\n") == 0
    assert "S3cretPw" not in out + err and "0ther5ecret" not in out + err
    assert not list(tmp_path.iterdir())  # no empty search folder left behind


def test_a_working_storage_logs_its_url_without_the_password(postgres_url, tmp_path, capsys):  # noqa: F811
    url = postgres_url + ("&" if "?" in postgres_url else "?") + "password=S3cretPw"
    assert main(["tune", *QUICK, "name=secret_url", f"project={tmp_path}", f"storage={url}"]) == 0
    out, err = capsys.readouterr()
    assert "password=hidden" in out and "S3cretPw" not in out + err
