"""`torchrun --nproc-per-node 2 -m dgq_compiler calibrate` (gloo, CPU) writes what one process writes."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["calibrate", "tiny", "--num-prompts", "3", "--steps", "2", "--latent-size", "8"]


def _env():
    # torchrun gives each rank one thread; float reductions depend on the thread count, so does the reference
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def test_two_gloo_ranks_write_the_single_process_statistics_byte_for_byte(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    single = subprocess.run([sys.executable, "-m", "dgq_compiler", *ARGS, "-o", str(tmp_path / "one" / "s.json")],
                            env=_env(), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    ranks = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            "-m", "dgq_compiler", *ARGS, "-o", str(tmp_path / "two" / "s.json")],
                           env=_env(), capture_output=True, text=True)
    assert ranks.returncode == 0, ranks.stderr[-2000:]
    assert "x 2 ranks (gloo)" in ranks.stdout and ranks.stdout.count("statistics") == 1  # rank 0 reports
    for name in ("s.json", "s.safetensors"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["s.json", "s.safetensors"]


def test_shard_under_torchrun_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from dgq_compiler.cli.main import main

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main([*ARGS, "-o", str(tmp_path / "s.json"), "--shard", "0/2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("under torchrun the ranks split them already: drop --shard") and "\n" not in err
    assert list(tmp_path.iterdir()) == []
