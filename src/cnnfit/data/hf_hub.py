"""hf:owner/name: a Hugging Face Hub dataset's parquet files, listed through the Hub's tree API and downloaded
into <data root>/hf/owner/name, each checked against the sha256 the Hub lists (hf.py then reads them).

Only with data.download=true; nothing is run from the repository (no loading script, no pickle).
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from cnnfit.errors import CnnfitError, one_line

log = logging.getLogger(__name__)
HUB = "https://huggingface.co"
CONVERTED = "refs%2Fconvert%2Fparquet"  # the Hub's automatic parquet conversion, for repos that hold no parquet
_LISTING_MAX = 16 << 20  # bytes of JSON listing read at most: ~80k files, far more than any image dataset's parquet
_REPO = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?", re.ASCII)


def _check_repo(repo: str) -> None:
    parts = repo.split("/")
    if len(parts) != 2 or ".." in repo or not all(_REPO.fullmatch(p) for p in parts):
        raise CnnfitError(f"'hf:{repo}' is not a Hugging Face dataset name; use hf:owner/name (letters, digits, "
                          "- _ and .), e.g. hf:ylecun/mnist")


def hub_folder(root: Path, repo: str) -> Path:
    """Where hf:owner/name lives under the data root: root/hf/owner/name (the name checked first)."""
    _check_repo(repo)
    owner, name = repo.split("/")
    return Path(root) / "hf" / owner / name


def _next_page(link: str) -> str | None:
    """The Hub pages long listings with a Link header: <url>; rel="next"."""
    m = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link)
    return m[1] if m else None


def _listing(endpoint: str, repo: str, revision: str, missing_ok: bool = False) -> list[dict]:
    """Every file of the repo at `revision` from the Hub's tree API, all pages; [] when `missing_ok` and the
    revision does not exist (the parquet conversion of a repo that has none)."""
    import http.client
    import urllib.error

    url = page = f"{endpoint}/api/datasets/{repo}/tree/{revision}?recursive=true"
    items: list[dict] = []
    total = 0
    while page:
        try:
            with urllib.request.urlopen(page, timeout=30) as response:
                body = response.read(_LISTING_MAX - total + 1)  # bounded: a listing never fills memory
                following = _next_page(response.headers.get("Link", ""))
        except urllib.error.HTTPError as exc:
            if missing_ok and exc.code == 404:
                return []
            hint = "; private and gated datasets need save_to_disk" if exc.code in (401, 403) else ""
            raise CnnfitError(f"cannot list hf:{repo} at {url} ({one_line(exc)}){hint}; check the name "
                              "and the network") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError, timeouts, a dropped connection
            raise CnnfitError(f"cannot list hf:{repo} at {url} ({one_line(exc)}); check the name and the "
                              "network") from None
        total += len(body)
        if total > _LISTING_MAX:
            raise CnnfitError(f"cannot list hf:{repo} at {url} (over {_LISTING_MAX >> 20} MB of listing); load it "
                              "with datasets and save_to_disk it instead")
        try:
            got = json.loads(body)
        except ValueError as exc:
            raise CnnfitError(f"cannot list hf:{repo} at {url} (not valid JSON: {one_line(exc)}); check the "
                              "name and the network") from None
        if not isinstance(got, list) or not all(isinstance(x, dict) for x in got):
            raise CnnfitError(f"cannot list hf:{repo} at {url} (not a list of files); check the name and the network")
        items += got
        page = following if following and following.startswith(endpoint + "/") else None
    return items


def _wanted(listing: list[dict], repo: str) -> dict[str, tuple[str, int | None]]:
    """{relative path: (sha256, size)} of the listed parquet files; one without a sha256 cannot be checked, and
    one whose path could leave the folder is refused: both stop the fetch."""
    wanted = {}
    for item in listing:
        path = item.get("path")
        if item.get("type") != "file" or not isinstance(path, str) or not path.lower().endswith(".parquet"):
            continue
        parts = PurePosixPath(path).parts
        if path.startswith("/") or "\\" in path or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise CnnfitError(f"the Hub's listing of hf:{repo} names a file '{path}' that cnnfit will not write")
        lfs = item.get("lfs") if isinstance(item.get("lfs"), dict) else {}
        oid, size = lfs.get("oid"), lfs.get("size")
        if not isinstance(oid, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", oid):
            raise CnnfitError(f"the Hub's listing of hf:{repo} gives no sha256 for {path}; cnnfit checks every file "
                              "it downloads, so load it with datasets and save_to_disk it instead")
        wanted[path] = (oid.lower(), size if isinstance(size, int) and size >= 0 else None)
    return wanted


def _prune(folder: Path, keep: set[str]) -> None:
    """Remove files not in `keep` (an older fetch's, a crashed download's temporary) and empty folders."""
    for here, _, files in os.walk(folder, topdown=False):
        for f in files:
            if (Path(here) / f).relative_to(folder).as_posix() not in keep:
                (Path(here) / f).unlink()
        if not os.listdir(here):
            os.rmdir(here)


def fetch_hub(repo: str, folder: Path, endpoint: str | None = None) -> Path:
    """Download the parquet files of the Hub dataset `repo` (owner/name) into `folder`, each checked against the
    sha256 the Hub lists, and return `folder`. Files gather in folder.partial, renamed to `folder` only once all
    are there: an interrupted fetch is never taken for the dataset, and the next fetch keeps its checked files."""
    from cnnfit.files import digest, download

    _check_repo(repo)
    folder = Path(folder)
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or HUB).rstrip("/")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise CnnfitError(f"{folder} exists and is not a Hugging Face dataset; move it away to fetch hf:{repo}")
    revision = "main"
    wanted = _wanted(_listing(endpoint, repo, revision), repo)
    if not wanted:
        revision = CONVERTED
        wanted = _wanted(_listing(endpoint, repo, revision, missing_ok=True), repo)
    if not wanted:
        raise CnnfitError(f"hf:{repo} has no parquet files at {endpoint}, neither in main nor in the Hub's parquet "
                          f"conversion; load it with datasets and save_to_disk it into {folder}")
    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    _prune(partial, set(wanted))
    total = sum(size or 0 for _, size in wanted.values())
    log.info("fetching hf:%s (%d parquet files, %.1f MB) into %s", repo, len(wanted), total / 1e6, folder)
    try:
        for path, (sha, size) in sorted(wanted.items()):
            target = partial / path
            if target.is_file() and (size is None or target.stat().st_size == size) and digest(target, "sha256") == sha:
                continue  # checked whole by an earlier, interrupted fetch
            target.parent.mkdir(parents=True, exist_ok=True)
            url = f"{endpoint}/datasets/{repo}/resolve/{revision}/{urllib.parse.quote(path)}"
            download(url, target, algorithm="sha256", expected=sha, max_bytes=size,
                     fix=f"check the network and run again (files already checked are kept in {partial})")
    finally:
        if partial.is_dir():
            _prune(partial, set(wanted))  # an empty .partial is not left behind
    try:
        if folder.is_dir():
            folder.rmdir()  # empty (checked above): rename needs the name free
        os.replace(partial, folder)
    except OSError as exc:
        raise CnnfitError(f"cannot move {partial} to {folder} ({one_line(exc)}); move it by hand") from None
    return folder


__all__ = ["fetch_hub", "hub_folder"]
