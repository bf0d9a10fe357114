"""Atomic output: everything we write lands under a temporary name first, then is renamed into place."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from dgq_compiler.errors import DgqError


def check_writable(path: str | Path, overwrite: bool = False) -> Path:
    """The output path, if its folder exists and is writable and (unless `overwrite`) nothing is there yet."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise DgqError(f"output folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise DgqError(f"output folder {str(parent)!r} is not writable")
    if path.exists() and not overwrite:
        raise DgqError(f"output {str(path)!r} already exists (pass --overwrite to replace it)")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path, directory: bool = False):
    """Yield a temporary sibling path; on success it is renamed to `path`, on failure removed."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a kept output folder gets the usual mode
    target = tmp if directory else tmp / path.name
    try:
        yield target
        if directory and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # the caller checked overwrite permission (check_writable)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def manifest_file(path: str | Path, what: str) -> Path:
    """The `.json` manifest of a manifest + `.safetensors` pair, given either file's path."""
    path = Path(path)
    if path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if path.suffix != ".json":
        raise DgqError(f"{what} path {str(path)!r} must name the manifest, ending in .json")
    return path


def sha256_file(path: str | Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
