"""Every subcommand through a table of bad inputs: wrong kinds, truncations, non-finite and out-of-range numbers,
unwritable or wrong-kind outputs, garbage statistics and recipes. Each must exit 2 with one line on stderr
naming the problem, no traceback, nothing written at or beside the output, nothing existing changed.

Driven in-process through `dgq`'s main(); every case fails before the work, so the table runs in seconds.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dgq_compiler.cli.main import main

UNWRITABLE = "/proc/self"  # exists, and not even root can create a file in it


def _tree(root: Path) -> dict:
    """Every entry under `root` (hidden ones too) -> kind, mode and content hash."""
    out = {}
    for p in sorted(root.rglob("*")):
        kind = "dir" if p.is_dir() else "file"
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if kind == "file" else ""
        out[p.relative_to(root).as_posix()] = (kind, p.stat().st_mode, digest)
    return out


def _copy_pair(src: Path, dst: Path) -> tuple[dict, dict]:
    """Copy a manifest + arrays pair to `dst`; returns (manifest, arrays) for editing."""
    from safetensors.numpy import load_file

    shutil.copy(src.with_suffix(".safetensors"), dst.with_suffix(".safetensors"))
    return json.loads(src.read_text()), load_file(str(src.with_suffix(".safetensors")))


def _write_pair(dst: Path, manifest: dict, arrays: dict | None = None) -> str:
    from safetensors.numpy import save_file

    manifest["arrays"] = dst.with_suffix(".safetensors").name
    if arrays is not None:
        save_file(arrays, str(dst.with_suffix(".safetensors")))
        manifest["arrays_sha256"] = hashlib.sha256(dst.with_suffix(".safetensors").read_bytes()).hexdigest()
    dst.write_text(json.dumps(manifest))
    return str(dst)


def _edited_pair(source, ws, edit_manifest=None, edit_arrays=None) -> str:
    """A copy of a manifest + safetensors pair with the manifest and/or the arrays edited."""
    manifest, arrays = _copy_pair(source, ws / "bad.json")
    if edit_manifest:
        edit_manifest(manifest)
    if edit_arrays:
        edit_arrays(arrays)
    return _write_pair(ws / "bad.json", manifest, arrays if edit_arrays else None)


def _stats(chain, ws, edit_manifest=None, edit_arrays=None) -> str:
    return _edited_pair(chain["stats"], ws, edit_manifest, edit_arrays)


def _recipe(chain, ws, edit_manifest=None, edit_arrays=None) -> str:
    return _edited_pair(chain["recipe"], ws, edit_manifest, edit_arrays)


def _swap_min_max(arrays):
    for name in list(arrays):
        if name.endswith("_min"):
            arrays[name], arrays[name[:-4] + "_max"] = arrays[name[:-4] + "_max"], arrays[name]


def _one_nan(arrays):
    name = sorted(arrays)[0]
    arrays[name] = arrays[name].copy()
    arrays[name].flat[0] = np.nan


def _switch_axis_to_pixel(manifest):
    entry = next(e for e in manifest["tensors"] if e["axis"] == "channel" and e["role"] == "input"
                 and e["shapes"]["group_map"][1] not in (256, 64, 16, 4, 1))
    entry["axis"] = "pixel"


def _graph_folder(chain, ws, source: str, content: bytes | None) -> str:
    """A copy of an export/compiled folder whose unet.onnx is replaced by `content` (None: kept)."""
    folder = ws / "graph"
    shutil.copytree(chain[source], folder)
    if content is not None:
        (folder / "unet.onnx").write_bytes(content)
    return str(folder)


def _truncated(chain, source):
    data = (chain[source] / "unet.onnx").read_bytes()
    return data[: len(data) // 3]


def _file(ws, name, text="") -> str:
    (ws / name).write_text(text)
    return str(ws / name)


def _folder(ws, name) -> str:
    (ws / name).mkdir()
    return str(ws / name)


# (id, argv from (chain, workspace), words the one-line error must contain)
CASES = [
    # ---- export
    ("export-unwritable", lambda c, w: ["export", "tiny", "-o", f"{UNWRITABLE}/out"], "cannot take new files"),
    ("export-missing-parent", lambda c, w: ["export", "tiny", "-o", str(w / "no" / "out")], "does not exist"),
    ("export-exists", lambda c, w: ["export", "tiny", "-o", _folder(w, "out")], "already exists"),
    ("export-file-where-folder", lambda c, w: ["export", "tiny", "-o", _file(w, "out", "x"), "--overwrite"],
     "is a file, expected a folder"),
    ("export-latent-huge", lambda c, w: ["export", "tiny", "-o", str(w / "o"), "--latent-size", "100000"], "--latent-size"),
    ("export-latent-odd", lambda c, w: ["export", "tiny", "-o", str(w / "o"), "--latent-size", "7"], "multiple of 8"),
    ("export-latent-negative", lambda c, w: ["export", "tiny", "-o", str(w / "o"), "--latent-size", "-16"], "--latent-size"),
    ("export-tolerance-nan", lambda c, w: ["export", "tiny", "-o", str(w / "o"), "--tolerance", "nan"], "finite"),
    ("export-tolerance-negative", lambda c, w: ["export", "tiny", "-o", str(w / "o"), "--tolerance", "-1"], "--tolerance"),
    ("export-batch-zero", lambda c, w: ["export", "tiny", "-o", str(w / "o"), "--batch", "0"], "--batch"),
    ("export-batch-huge", lambda c, w: ["export", "tiny", "-o", str(w / "o"), "--batch", "100000"], "--batch"),
    ("export-seed-negative", lambda c, w: ["export", "tiny", "-o", str(w / "o"), "--seed", "-1"], "--seed"),
    ("export-model-file", lambda c, w: ["export", _file(w, "model.json", "{"), "-o", str(w / "o")], "model"),
    # ---- calibrate
    ("calibrate-guidance-nan", lambda c, w: ["calibrate", "tiny", "-o", str(w / "s.json"), "--guidance", "nan"], "finite"),
    ("calibrate-guidance-inf", lambda c, w: ["calibrate", "tiny", "-o", str(w / "s.json"), "--guidance", "inf"], "finite"),
    ("calibrate-guidance-one", lambda c, w: ["calibrate", "tiny", "-o", str(w / "s.json"), "--guidance", "1"], "--guidance"),
    ("calibrate-steps-zero", lambda c, w: ["calibrate", "tiny", "-o", str(w / "s.json"), "--steps", "0"], "--steps"),
    ("calibrate-latent-huge", lambda c, w: ["calibrate", "tiny", "-o", str(w / "s.json"), "--latent-size", "100000"],
     "--latent-size"),
    ("calibrate-not-json", lambda c, w: ["calibrate", "tiny", "-o", str(w / "s.txt")], ".json"),
    ("calibrate-unwritable", lambda c, w: ["calibrate", "tiny", "-o", f"{UNWRITABLE}/s.json"], "cannot take new files"),
    ("calibrate-folder-where-file", lambda c, w: ["calibrate", "tiny", "-o", _folder(w, "s.json"), "--overwrite"],
     "is a folder, expected a file"),
    ("calibrate-arrays-folder", lambda c, w: ["calibrate", "tiny", "-o", str(w / "s.json"), "--overwrite",
                                              "--negative-prompt", _folder(w, "s.safetensors")],
     "is a folder, expected a file"),  # the .safetensors half of the pair is a folder: no orphan .json either
    ("calibrate-empty-prompts", lambda c, w: ["calibrate", "tiny", "-o", str(w / "s.json"), "--prompts",
                                              _file(w, "p.txt", "\n\n")], "prompt"),
    ("calibrate-bad-shard", lambda c, w: ["calibrate", "tiny", "-o", str(w / "s.json"), "--shard", "3/2"], "shard"),
    # ---- quantize
    ("quantize-swapped-stats", lambda c, w: ["quantize", _stats(c, w, edit_arrays=_swap_min_max), "-o",
                                             str(w / "r.json")], "min <= max"),
    ("quantize-nan-stats", lambda c, w: ["quantize", _stats(c, w, edit_arrays=_one_nan), "-o", str(w / "r.json")],
     "non-finite"),
    ("quantize-stats-resolution-text", lambda c, w: [
        "quantize", _stats(c, w, lambda m: m.update(resolution="16x16")), "-o", str(w / "r.json")], "'resolution'"),
    ("quantize-stats-sampling-text", lambda c, w: [
        "quantize", _stats(c, w, lambda m: m.update(sampling="x")), "-o", str(w / "r.json")], "'sampling'"),
    ("quantize-stats-negative-timesteps", lambda c, w: [
        "quantize", _stats(c, w, lambda m: m.update(timesteps=[-t for t in m["timesteps"]])), "-o",
        str(w / "r.json")], "'timesteps'"),
    ("quantize-stats-no-sha", lambda c, w: [
        "quantize", _stats(c, w, lambda m: m.pop("arrays_sha256")), "-o", str(w / "r.json")], "'arrays_sha256'"),
    ("quantize-stats-truncated", lambda c, w: [
        "quantize", _file(w, "t.json", c["stats"].read_text()[:500]), "-o", str(w / "r.json")], "not valid JSON"),
    ("quantize-stats-are-a-recipe", lambda c, w: ["quantize", str(c["recipe"]), "-o", str(w / "r.json")],
     "not a dgq statistics file"),
    ("quantize-unwritable", lambda c, w: ["quantize", str(c["stats"]), "-o", f"{UNWRITABLE}/r.json"],
     "cannot take new files"),
    ("quantize-folder-where-file", lambda c, w: ["quantize", str(c["stats"]), "-o", _folder(w, "r.json"),
                                                 "--overwrite"], "is a folder, expected a file"),
    ("quantize-unknown-preset", lambda c, w: ["quantize", str(c["stats"]), "-o", str(w / "r.json"), "--preset", "x"],
     "preset"),
    # ---- merge-stats
    ("merge-swapped", lambda c, w: ["merge-stats", str(c["stats"]), _stats(c, w, edit_arrays=_swap_min_max), "-o",
                                    str(w / "m.json")], "min <= max"),
    ("merge-folder-where-file", lambda c, w: ["merge-stats", str(c["stats"]), "-o", _folder(w, "m.json"),
                                              "--overwrite"], "is a folder, expected a file"),
    ("merge-unwritable", lambda c, w: ["merge-stats", str(c["stats"]), "-o", f"{UNWRITABLE}/m.json"],
     "cannot take new files"),
    # ---- compile
    ("compile-truncated-graph", lambda c, w: ["compile", _graph_folder(c, w, "export", _truncated(c, "export")),
                                              "--recipe", str(c["recipe"]), "-o", str(w / "o")], "not a readable ONNX"),
    ("compile-empty-graph", lambda c, w: ["compile", _graph_folder(c, w, "export", b""), "--recipe", str(c["recipe"]),
                                          "-o", str(w / "o")], "empty"),
    ("compile-export-json", lambda c, w: ["compile", str(c["export"] / "export.json"), "--recipe", str(c["recipe"]),
                                          "-o", str(w / "o")], "not a readable ONNX"),
    ("compile-compiled-graph", lambda c, w: ["compile", str(c["compiled"]), "--recipe", str(c["recipe"]), "-o",
                                             str(w / "o")], "already compiled"),
    ("compile-empty-recipe", lambda c, w: ["compile", str(c["export"]), "--recipe",
                                           _recipe(c, w, lambda m: m.update(tensors=[])), "-o", str(w / "o")],
     "'tensors'"),
    ("compile-recipe-timesteps-text", lambda c, w: ["compile", str(c["export"]), "--recipe",
                                                    _recipe(c, w, lambda m: m.update(timesteps="961,921")), "-o",
                                                    str(w / "o")], "timesteps"),
    ("compile-recipe-timesteps-one-text", lambda c, w: ["compile", str(c["export"]), "--recipe",
                                                        _recipe(c, w, lambda m: m.update(timesteps="961")), "-o",
                                                        str(w / "o")], "non-negative integers"),
    ("compile-recipe-negative-timesteps", lambda c, w: [
        "compile", str(c["export"]), "--recipe", _recipe(c, w, lambda m: m.update(timesteps=[-t for t in m["timesteps"]])),
        "-o", str(w / "o")], "non-negative"),
    ("compile-recipe-axis-switched", lambda c, w: ["compile", str(c["export"]), "--recipe",
                                                   _recipe(c, w, _switch_axis_to_pixel), "-o", str(w / "o")], "pixel"),
    ("compile-recipe-no-sha", lambda c, w: ["compile", str(c["export"]), "--recipe",
                                            _recipe(c, w, lambda m: m.pop("arrays_sha256")), "-o", str(w / "o")],
     "arrays_sha256"),
    ("compile-recipe-is-stats", lambda c, w: ["compile", str(c["export"]), "--recipe", str(c["stats"]), "-o",
                                              str(w / "o")], "not a dgq recipe"),
    ("compile-tolerance-nan", lambda c, w: ["compile", str(c["export"]), "--recipe", str(c["recipe"]), "-o",
                                            str(w / "o"), "--tolerance", "nan"], "finite"),
    ("compile-tolerance-negative", lambda c, w: ["compile", str(c["export"]), "--recipe", str(c["recipe"]), "-o",
                                                 str(w / "o"), "--tolerance", "-1"], "--tolerance"),
    ("compile-unwritable", lambda c, w: ["compile", str(c["export"]), "--recipe", str(c["recipe"]), "-o",
                                         f"{UNWRITABLE}/o"], "cannot take new files"),
    ("compile-file-where-folder", lambda c, w: ["compile", str(c["export"]), "--recipe", str(c["recipe"]), "-o",
                                                _file(w, "o", "x"), "--overwrite"], "is a file, expected a folder"),
    # ---- verify
    ("verify-empty-graph", lambda c, w: ["verify", _graph_folder(c, w, "compiled", b"")], "empty"),
    ("verify-truncated-graph", lambda c, w: ["verify", _graph_folder(c, w, "compiled", _truncated(c, "compiled"))],
     "not a readable ONNX"),
    ("verify-fp32-export", lambda c, w: ["verify", str(c["export"])], "nothing to check"),
    ("verify-latent-negative", lambda c, w: ["verify", str(c["compiled"]), "--latent-size", "-16"], "--latent-size"),
    ("verify-latent-odd", lambda c, w: ["verify", str(c["compiled"]), "--latent-size", "7"], "--latent-size"),
    ("verify-latent-zero", lambda c, w: ["verify", str(c["compiled"]), "--latent-size", "0"], "multiple of 8"),
    ("verify-timesteps-nan", lambda c, w: ["verify", str(c["compiled"]), "--timesteps", "nan"], "finite"),
    ("verify-timesteps-negative", lambda c, w: ["verify", str(c["compiled"]), "--timesteps", "1,-5"], "timesteps"),
    ("verify-batch-zero", lambda c, w: ["verify", str(c["compiled"]), "--batch", "0"], "--batch"),
    ("verify-json-unwritable", lambda c, w: ["verify", str(c["compiled"]), "--json", f"{UNWRITABLE}/v.json"],
     "cannot take new files"),
    ("verify-json-folder", lambda c, w: ["verify", str(c["compiled"]), "--json", _folder(w, "v.json"), "--overwrite"],
     "is a folder, expected a file"),
    ("verify-unknown-target", lambda c, w: ["verify", str(c["compiled"]), "--target", "no-such-npu"], "no-such-npu"),
    # ---- check
    ("check-empty-graph", lambda c, w: ["check", _graph_folder(c, w, "compiled", b"")], "empty"),
    ("check-fp32-export", lambda c, w: ["check", str(c["export"])], "nothing to check"),
    ("check-batch-zero", lambda c, w: ["check", str(c["compiled"]), "--batch", "0"], "--batch"),
    ("check-latent-negative", lambda c, w: ["check", str(c["compiled"]), "--latent-size", "-4"], "--latent-size"),
    ("check-truncated-graph", lambda c, w: ["check", _graph_folder(c, w, "compiled", _truncated(c, "compiled"))],
     "not a readable ONNX"),
    # ---- cost
    ("cost-groups-beyond-channels", lambda c, w: ["cost", "--model", "tiny", "--bits", "W8A8", "--groups", "4096"],
     "channels"),
    ("cost-groups-huge", lambda c, w: ["cost", "--model", "tiny", "--bits", "W8A8", "--groups", "100000"], "--groups"),
    ("cost-resolution-huge", lambda c, w: ["cost", "--model", "tiny", "--resolution", "800000"], "--resolution"),
    ("cost-batch-zero", lambda c, w: ["cost", "--model", "tiny", "--batch", "0"], "--batch"),
    ("cost-truncated-graph", lambda c, w: ["cost", "--model",
                                           str(Path(_graph_folder(c, w, "export", _truncated(c, "export"))) / "unet.onnx")],
     "unet.onnx"),
    ("cost-bad-bits", lambda c, w: ["cost", "--model", "tiny", "--bits", "W3A8"], "W3A8"),
    # ---- run
    ("run-guidance-nan", lambda c, w: ["run", "-o", str(w / "r"), "--guidance", "nan"], "finite"),
    ("run-steps-zero", lambda c, w: ["run", "-o", str(w / "r"), "--steps", "0"], "--steps"),
    ("run-images-one", lambda c, w: ["run", "-o", str(w / "r"), "--images", "32,1"], "--images must be one count"),
    ("run-images-three-sets", lambda c, w: ["run", "-o", str(w / "r"), "--images", "8,8,8"], "one per prompt set"),
    ("run-images-word", lambda c, w: ["run", "-o", str(w / "r"), "--images", "32,many"], "--images"),
    ("run-unwritable", lambda c, w: ["run", "-o", f"{UNWRITABLE}/r"], "cannot take new files"),
    ("run-file-where-folder", lambda c, w: ["run", "-o", _file(w, "r", "x"), "--overwrite"],
     "is a file, expected a folder"),
    ("run-unknown-preset", lambda c, w: ["run", "-o", str(w / "r"), "--presets", "dgq-w9a9"], "dgq-w9a9"),
    ("run-missing-prompts", lambda c, w: ["run", "-o", str(w / "r"), "--prompts", str(w / "none.txt")], "prompt file"),
    # ---- evaluate
    ("evaluate-guidance-nan", lambda c, w: ["evaluate", "-o", str(w / "g.png"), "--guidance", "nan"], "finite"),
    ("evaluate-limit-one", lambda c, w: ["evaluate", "-o", str(w / "g.png"), "--limit", "1"], "--limit"),
    ("evaluate-not-png", lambda c, w: ["evaluate", "-o", str(w / "g.jpg")], ".png"),
    ("evaluate-unwritable", lambda c, w: ["evaluate", "-o", f"{UNWRITABLE}/g.png"], "cannot take new files"),
    ("evaluate-folder-where-file", lambda c, w: ["evaluate", "-o", _folder(w, "g.png"), "--overwrite"],
     "is a folder, expected a file"),
]


@pytest.fixture(scope="module")
def chain_digest(cli_chain):
    root = cli_chain["export"].parent
    before = _tree(root)
    yield
    assert _tree(root) == before, "a bad-input case changed the shared artefacts"


@pytest.mark.parametrize("argv_of, words", [pytest.param(f, w, id=i) for i, f, w in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv_of, words, cli_chain, chain_digest, tmp_path, capsys):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "keep.txt").write_text("mine")
    argv = argv_of(cli_chain, workspace)
    before = _tree(workspace)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("dgq ") and words in lines[0], lines[0]
    assert _tree(workspace) == before  # nothing new at or beside the output, nothing existing changed
