"""Fetch the standard datasets from their official addresses, checksum-verified, into the data root.

Only for users who are online and ask for it (`data.download=true`); nothing else in cnnfit touches
the network. A partial or corrupt download never lands under its real name.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from pathlib import Path

from cnnfit import files
from cnnfit.data.arrays import inflation
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
    "qmnist": ("https://raw.githubusercontent.com/facebookresearch/qmnist/master/", [
        ("qmnist-train-images-idx3-ubyte.gz", "ed72d4157d28c017586c42bc6afe6370"),
        ("qmnist-train-labels-idx2-int.gz", "0058f8dd561b90ffdd0f734c6a30e5e4"),
        ("qmnist-test-images-idx3-ubyte.gz", "1394631089c404de565df7b7aeaf9412"),
        ("qmnist-test-labels-idx2-int.gz", "5b5b05890a5e13444e108efe57b788aa")]),
    # one 562 MB archive holds all six EMNIST sets; it unpacks to emnist/gzip/ and each set reads its own files
    "emnist": ("https://biometrics.nist.gov/cs_links/EMNIST/", [("gzip.zip", "58c8d27c78d21e728a6bc7b3cc06412e")]),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/", [("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")]),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/", [("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")]),
    "svhn": ("http://ufldl.stanford.edu/housenumbers/", [
        ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
        ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3")]),
    "stl10": ("http://ai.stanford.edu/~acoates/stl10/", [("stl10_binary.tar.gz", "91f7769df0f17e558f3565bffb0c7dfb")]),
}
SKIPPED_MEMBERS = ("unlabeled_X.bin",)  # STL-10's 2.7 GB of unlabelled images: no use to a classifier here


def md5sum(path: Path) -> str:
    return files.digest(path, "md5")


def download(name: str, root: Path, base_url: str | None = None) -> Path:
    """Download `name` into root/name (skipping files already present and verified); returns that folder.
    The EMNIST sets share root/emnist. CIFAR comes as its python version; the binary one is read when placed.

    `base_url` (or CNNFIT_MIRROR) replaces the official address, for mirrors and offline tests."""
    name = "emnist" if name.startswith("emnist-") else name
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
        _unpack(target, folder)
    return folder


def _unpack(archive: Path, folder: Path) -> None:
    """A downloaded archive's files, beside it: tar members through tarfile's "data" filter (no absolute paths,
    links or devices); zip members flattened into their one folder, each checked on its declared sizes."""
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if Path(m.name).name not in SKIPPED_MEMBERS]
            tar.extractall(folder, members, filter="data")
    elif archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                parts = Path(info.filename).parts
                if info.is_dir() or len(parts) != 2 or parts[1].startswith("."):
                    continue  # EMNIST's archive: gzip/<file>, nothing deeper
                if why := inflation(info.file_size, info.compress_size):
                    raise CnnfitError(f"{archive}: {info.filename} {why}; download it again")
                (folder / parts[0]).mkdir(exist_ok=True)
                with zf.open(info) as src, files.atomic_path(folder / parts[0] / parts[1]) as tmp, \
                        open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
