"""Fetch the standard datasets from their official addresses, checksum-verified, into the data root.

Only for users who are online and ask for it (`data.download=true`); nothing else in cnnfit touches
the network. A partial or corrupt download never lands under its real name.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from cnnfit import files
from cnnfit.errors import CnnfitError

# (base URL, [(file, md5)]): the addresses and checksums the datasets' authors publish
OFFICIAL = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", [
        ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")]),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", [
        ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310")]),
    "kmnist": ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/", [
        ("train-images-idx3-ubyte.gz", "bdb82020997e1d708af4cf47b453dcf7"),
        ("train-labels-idx1-ubyte.gz", "e144d726b3acfaa3e44228e80efcd344"),
        ("t10k-images-idx3-ubyte.gz", "5c965bf0a639b31b8f53240b1b52f4d7"),
        ("t10k-labels-idx1-ubyte.gz", "7320c461ea6c1c855c0b718fb2a4b134")]),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/", [("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")]),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/", [("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")]),
}


def md5sum(path: Path) -> str:
    return files.digest(path, "md5")


def download(name: str, root: Path, base_url: str | None = None) -> Path:
    """Download `name` into root/name (skipping files already present and verified); returns that folder.

    `base_url` (or CNNFIT_MIRROR) replaces the official address, for mirrors and offline tests."""
    if name not in OFFICIAL:
        raise CnnfitError(f"cnnfit cannot download '{name}'; downloadable: {', '.join(OFFICIAL)}")
    official, listed = OFFICIAL[name]
    base = base_url or os.environ.get("CNNFIT_MIRROR") or official
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for file, md5 in listed:
        target = folder / file
        if target.exists() and md5sum(target) == md5:
            continue
        files.download(base.rstrip("/") + "/" + file, target, algorithm="md5", expected=md5,
                       fix="check the network or place the files by hand")
        if file.endswith(".tar.gz"):
            with tarfile.open(target) as tar:
                tar.extractall(folder, filter="data")  # "data": no absolute paths, links or devices
    return folder
