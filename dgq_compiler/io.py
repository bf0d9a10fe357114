"""Atomic output for the pipeline: the filesystem primitives of `models.files` with the pipeline's error type.

Everything we write lands under a temporary name first and is renamed when complete; outputs are checked
(folder writable, nothing there unless --overwrite, the right kind) before any work starts.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from dgq_compiler.errors import DgqError
from models import files
from models.files import remove_stale_temporaries, sha256_file, sigterm_as_interrupt

__all__ = ["atomic_path", "check_pair_writable", "check_writable", "manifest_file", "output_manifest", "read_format_doc",
           "relative_path", "remove_stale_temporaries", "report_json", "sha256_file", "sigterm_as_interrupt",
           "write_format_doc", "write_text_atomic"]


@contextlib.contextmanager
def _as_dgq_error():
    try:
        yield
    except files.OutputPathError as exc:
        raise DgqError(str(exc)) from None


def check_writable(path: str | Path, overwrite: bool = False, kind: str = "file") -> Path:
    """The output path, if a `kind` ("file" or "folder") output can be created there (see models.files)."""
    with _as_dgq_error():
        return files.check_writable(path, overwrite, kind)


@contextlib.contextmanager
def atomic_path(path: str | Path, directory: bool = False):
    """Yield a temporary sibling path; on success it is renamed to `path`, on failure removed."""
    with _as_dgq_error(), files.atomic_path(path, directory) as tmp:
        yield tmp


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_format_doc(path: Path, doc: dict) -> Path:
    """A small JSON document of ours (sorted keys, one trailing newline), written atomically."""
    import json

    write_text_atomic(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return path


def read_format_doc(path: str | Path, what: str, kind: str, fmt: str, version: int) -> dict:
    """The JSON document at `path` if it is one of ours (`format` == fmt, `version` == version), else one
    DgqError line naming `what` (e.g. "bit allocation 'a.json'") and the `kind` of file expected."""
    import json

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DgqError(f"{what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DgqError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt or doc.get("version") != version:
        raise DgqError(f"{what} is not a dgq {kind} (format {fmt} version {version})")
    return doc


def manifest_file(path: str | Path, what: str) -> Path:
    """The `.json` manifest of a manifest + `.safetensors` pair, given either file's path."""
    path = Path(path)
    if path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if path.suffix != ".json":
        raise DgqError(f"{what} path {str(path)!r} must name the manifest, ending in .json")
    return path


def output_manifest(output: str, overwrite: bool = False) -> Path:
    """A CLI's `--output` for a manifest + `.safetensors` pair: it must end in .json, and both files must be
    writable (checked before any work starts)."""
    out = Path(output)
    if out.suffix != ".json":
        raise DgqError(f"--output must name the manifest, ending in .json, got {output!r}")
    return check_pair_writable(out, overwrite)


def check_pair_writable(manifest: str | Path, overwrite: bool = False) -> Path:
    """A manifest `.json` and its `.safetensors` beside it: both checked before either is written."""
    manifest = Path(manifest)
    check_writable(manifest, overwrite)
    check_writable(manifest.with_suffix(".safetensors"), overwrite)
    return manifest


def report_json(doc: dict) -> str:
    """A JSON report's text: sorted keys, and the run-to-run timings (a `seconds` dict) under one top-level
    `timings` key, so two identical runs give files that differ only there."""
    import json

    doc = dict(doc)
    doc["timings"] = doc.pop("seconds", {})
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def relative_path(path: str | Path, folder: str | Path) -> str:
    """`path` as seen from `folder` (where the report that names it lives), POSIX separators."""
    import os

    return Path(os.path.relpath(Path(path).resolve(), Path(folder).resolve())).as_posix()
