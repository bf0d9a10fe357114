"""Filesystem primitives for every output the project writes: checked before the work, written atomically.

One implementation for the whole distribution: `models` imports no other project package, so the training
scripts use this module directly and `dgq_compiler.io` builds on it.

- `check_writable` refuses, before any work, an output whose folder is missing or cannot take a file (a
  read-only mount, /proc), an existing output without `overwrite`, and an existing output of the other kind
  (a folder where a file goes, or a file where a folder goes), which `overwrite` must not silently replace.
- `atomic_path` yields a temporary sibling `.NAME.dgq<pid>-<random>.tmp/` and renames the result into place;
  a killed run leaves that folder behind, and the next run into the same folder removes it once the pid is
  gone (parallel shards writing into one folder keep theirs: their pids are alive).
- Files land with the ordinary mode (0666 minus the umask) whatever wrote them (safetensors writes 0600).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import signal
from pathlib import Path

from models.errors import ModelError

_TEMP = re.compile(r"^\..+\.dgq(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")


class OutputPathError(ModelError):
    """An output path that cannot be written (missing or read-only folder, existing or wrong-kind output)."""


def _parent(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def check_writable(path: str | Path, overwrite: bool = False, kind: str = "file") -> Path:
    """`path` if a `kind` ("file" or "folder") output can be created there; raises OutputPathError otherwise."""
    if kind not in ("file", "folder"):
        raise ValueError(f"kind must be 'file' or 'folder', got {kind!r}")
    path = Path(path)
    parent = _parent(path)
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise OutputPathError(f"output folder {str(parent)!r} {what}")
    probe = parent / f".{path.name}.dgq{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:  # os.access says yes to root on a read-only mount or under /proc: try for real
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise OutputPathError(f"output folder {str(parent)!r} cannot take new files "
                              f"({os.strerror(exc.errno) if exc.errno else exc})") from None
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputPathError(f"output {str(path)!r} already exists (pass --overwrite to replace it)")
        is_folder = path.is_dir() and not path.is_symlink()
        if is_folder != (kind == "folder"):
            have = "a folder" if is_folder else "a file"
            raise OutputPathError(f"output {str(path)!r} is {have}, expected a {kind}: --overwrite replaces only "
                                  f"a {kind}; move it away first")
    return path


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporaries killed runs left in `folder` (only those whose process is gone); returns them."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        if not match or _pid_alive(int(match["pid"])):
            continue
        target = Path(entry.path)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                target.unlink()
        removed.append(target)
    return removed


def _ordinary_modes(root: Path) -> None:
    """Give everything under `root` the mode a plain open()/mkdir() would: 0666/0777 minus the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(root, (0o777 if root.is_dir() else 0o666) & ~umask)
    if root.is_dir():
        for base, dirs, files in os.walk(root):
            for name in dirs:
                os.chmod(os.path.join(base, name), 0o777 & ~umask)
            for name in files:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(base, name), 0o666 & ~umask)


@contextlib.contextmanager
def atomic_path(path: str | Path, directory: bool = False):
    """Yield a temporary path beside `path`; on success it is renamed to `path`, on failure removed.

    The caller checked overwrite permission with `check_writable` (an existing folder is replaced)."""
    path = Path(path)
    parent = _parent(path)
    remove_stale_temporaries(parent)
    while True:
        tmp = parent / f".{path.name}.dgq{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            tmp.mkdir()
            break
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise OutputPathError(f"output folder {str(parent)!r} does not exist") from None
            raise OutputPathError(f"output folder {str(parent)!r} cannot take new files "
                                  f"({os.strerror(exc.errno) if exc.errno else exc})") from None
    target = tmp if directory else tmp / path.name
    try:
        yield target
        if target.exists():
            _ordinary_modes(target)
        if directory and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def sha256_file(path: str | Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def sigterm_as_interrupt() -> None:
    """Make SIGTERM unwind like Ctrl-C, so temporaries are removed (call from a command's main thread)."""
    with contextlib.suppress(ValueError):  # not the main thread: leave the default
        signal.signal(signal.SIGTERM, _raise_interrupt)
