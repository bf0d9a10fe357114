"""The benchmarks' memory sampler: a process tree's peak, found without reading every page table each time."""
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from benchmarks.rss import PeakTreePss, descendants, peak_rss, tree_pss, tree_rss  # noqa: E402

# a child holds 200 MB, starts a grandchild that holds 300 MB, both sleep, then both end
CHILD = """
import subprocess, sys, time
held = bytearray(200 * 2**20)
grandchild = subprocess.Popen([sys.executable, "-c",
    "import time; held = bytearray(300 * 2**20); print('ready', flush=True); time.sleep(1.5)"],
    stdout=subprocess.PIPE)
grandchild.stdout.readline()
print("ready", flush=True)
grandchild.wait()
"""


def test_peak_of_a_process_tree_counts_the_grandchild():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE)
    with PeakTreePss(child.pid, interval=0.05) as tree:
        child.stdout.readline()  # both hold their memory now
        tree_now = descendants(child.pid)
        pss, rss = tree_pss(child.pid), tree_rss(child.pid)
        time.sleep(0.3)
        child.wait()
    assert len(tree_now) == 2 and tree_now[0] == child.pid
    assert 480 * 2**20 < pss <= rss  # both processes' buffers; Pss never above Rss (what the sampler relies on)
    assert 480 * 2**20 < tree.peak < 700 * 2**20  # the peak is the tree's, not the largest process's 300 MB
    assert descendants(child.pid) == [child.pid] and tree_pss(child.pid) == 0  # an ended process holds nothing


def test_peak_rss_is_this_process_images_peak_not_the_parents():
    """A fresh interpreter reports its own small peak (not a parent's: ru_maxrss would keep that across fork + exec),
    then at least the 150 MB it briefly held."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from benchmarks.rss import peak_rss; "
            "before = peak_rss(); held = b'x' * (150 * 2**20); del held; print(before, peak_rss())")
    before, after = map(int, subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True,
                                            check=True).stdout.split())
    assert before < 100 * 2**20 and after >= 150 * 2**20
    assert peak_rss() > 0
