"""report/quality.py: the quality section names each prompt set's image count (the whole section is rendered by
tests/dgq_compiler/test_run.py, whose run gives its sets different counts)."""
from dgq_compiler.report.quality import images_phrase


def test_one_count_reads_per_set_and_two_counts_name_each_set():
    same = {"heldout": {"images": 32}, "rephrased": {"images": 32}}
    assert images_phrase(same) == "32 images per configuration and prompt set"
    differ = {"heldout": {"images": 32}, "rephrased": {"images": 64}}
    assert images_phrase(differ) == "32 images per configuration on the held-out set, 64 on the rephrased set"
    assert images_phrase({"heldout": {"images": 8}}) == "8 images per configuration and prompt set"
