"""The filesystem primitives: writability checked for real, wrong kinds refused, stale temporaries of dead
processes removed (live ones kept), ordinary file modes, nothing left behind on failure."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from models.files import OutputPathError, atomic_path, check_writable, remove_stale_temporaries


def test_missing_parent_and_unwritable_folder_are_refused(tmp_path):
    with pytest.raises(OutputPathError, match="does not exist"):
        check_writable(tmp_path / "no" / "x.json")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match="is not a folder"):
        check_writable(tmp_path / "file" / "x.json")
    if os.path.isdir("/proc/self"):  # root passes os.access here; creating a file does not work
        with pytest.raises(OutputPathError, match="cannot take new files"):
            check_writable("/proc/self/x.json")
    assert check_writable(tmp_path / "x.json") == tmp_path / "x.json"
    assert list(tmp_path.iterdir()) == [tmp_path / "file"]  # the probe left nothing


def test_existing_outputs_need_overwrite_and_the_right_kind(tmp_path):
    (tmp_path / "a.json").mkdir()
    (tmp_path / "folder").write_text("x")
    (tmp_path / "b.json").write_text("x")
    with pytest.raises(OutputPathError, match="already exists"):
        check_writable(tmp_path / "b.json")
    check_writable(tmp_path / "b.json", overwrite=True)
    with pytest.raises(OutputPathError, match="is a folder, expected a file"):
        check_writable(tmp_path / "a.json", overwrite=True)
    with pytest.raises(OutputPathError, match="is a file, expected a folder"):
        check_writable(tmp_path / "folder", overwrite=True, kind="folder")


def test_atomic_file_gets_the_ordinary_mode_and_failure_leaves_nothing(tmp_path):
    with atomic_path(tmp_path / "x.bin") as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)  # as safetensors does
        os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "x.bin").stat().st_mode) == 0o666 & ~umask
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "y.bin") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


def test_stale_temporaries_go_only_when_their_process_is_gone(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".out.dgq{dead_pid}-0123abcd.tmp"
    live = tmp_path / f".out.dgq{os.getppid()}-0123abcd.tmp"  # our parent is alive
    foreign = tmp_path / ".out.abcdefgh.tmp"                     # not ours to judge
    for folder in (stale, live, foreign):
        folder.mkdir()
    assert remove_stale_temporaries(tmp_path) == [stale]
    with atomic_path(tmp_path / "out") as tmp:
        tmp.write_text("done")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, foreign.name, "out"])


def test_sigterm_unwinds_like_ctrl_c_and_removes_the_temporary(tmp_path):
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from models.files import atomic_path, sigterm_as_interrupt\n"
        "sigterm_as_interrupt()\n"
        "try:\n"
        "    with atomic_path(Path(sys.argv[1]) / 'out', directory=True) as tmp:\n"
        "        (tmp / 'half').write_text('x')\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(60)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout.readline().strip() == "ready"
    assert len(list(tmp_path.iterdir())) == 1  # the temporary folder exists while it works
    proc.terminate()
    assert proc.wait(timeout=30) == 130
    assert list(tmp_path.iterdir()) == []
