"""The report says plainly whether the model has SD's activation outliers and <start> attention peak."""
from __future__ import annotations

from dgq_compiler.report.markdown import structure_sentence


def _summary(ratios, bos_mean=None, other_mean=0.0129):
    summary = {"figures": {"ranges": [{"outlier_ratio": r, "module": f"layer{i}"} for i, r in enumerate(ratios)]}}
    if bos_mean is not None:
        summary["attention"] = {"bos_mean": bos_mean, "other_mean": other_mean, "bos_share_of_mass": 0.0}
    return summary


def test_a_testbed_without_either_property_is_said_to_lack_both():
    text = structure_sentence(_summary([10.5, 15.9, 14.5], bos_mean=0.017))  # an earlier shapes model's figures
    assert "lacks real Stable Diffusion's activation outliers (largest range 15.9×" in text
    assert "lacks SD's <start> attention peak (<start> draws 1.3×" in text


def test_a_model_with_both_is_said_to_have_both():
    text = structure_sentence(_summary([31.0, 240.0], bos_mean=0.5, other_mean=0.006))
    assert ("has activation outliers at real Stable Diffusion's scale (largest range 240× the median, "
            "at layer1's input)") in text
    assert "has a <start> attention peak (83.3×" in text
    assert "lacks real" not in text and "lacks SD" not in text


def test_thresholds_are_where_the_words_change():
    assert "lacks real" in structure_sentence(_summary([29.9]))
    assert "has activation outliers" in structure_sentence(_summary([30.0]))
    assert "has no cross-attention" in structure_sentence(_summary([]))
    assert "has a <start>" in structure_sentence(_summary([1.0], bos_mean=0.05, other_mean=0.01))
    assert "lacks SD's <start>" in structure_sentence(_summary([1.0], bos_mean=0.0499, other_mean=0.01))
