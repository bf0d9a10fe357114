"""Per-layer SQNR compared as each output is made (analysis.per_layer_sqnr) against the layer outputs of FP."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dgq_compiler.report.analysis import UNetCall, layer_outputs, per_layer_sqnr, snr_db


class TwoLayers(torch.nn.Module):
    """A UNet-shaped callable: (sample, timestep, states) -> sample, through two named Linear layers."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.first, self.second = torch.nn.Linear(6, 6), torch.nn.Linear(6, 6)

    def forward(self, sample, timestep, states, return_dict=False):
        return (self.second(torch.relu(self.first(sample + states))) * timestep,)


def _calls(n=3):
    rng = np.random.default_rng(1)
    return [UNetCall(i, float(10 * i + 1), rng.standard_normal((2, 4, 6)).astype(np.float32),
                     rng.standard_normal((2, 4, 6)).astype(np.float32), None) for i in range(n)]


def test_streamed_sqnr_equals_the_sqnr_of_all_outputs_together():
    model, calls, layers = TwoLayers(), _calls(), ["first", "second"]
    fp = layer_outputs(model, calls, layers)
    with torch.no_grad():
        model.second.weight.add_(0.01 * torch.randn(6, 6))
    got = per_layer_sqnr(model, calls, layers, fp)
    quantized = layer_outputs(model, calls, layers)
    for name in layers:
        ref = np.concatenate([c[name].ravel() for c in fp])
        test = np.concatenate([c[name].ravel() for c in quantized])
        assert got[name] == pytest.approx(snr_db(ref, test), rel=1e-12)
    assert got["first"] == float("inf") and 10 < got["second"] < 80  # only the perturbed layer differs


def test_each_call_is_compared_with_its_own_reference():
    model, calls, layers = TwoLayers(), _calls(), ["first"]
    fp = layer_outputs(model, calls, layers)
    assert per_layer_sqnr(model, calls, layers, fp)["first"] == float("inf")
    assert per_layer_sqnr(model, calls, layers, fp[::-1])["first"] < 10  # references of other calls: noise


def test_guidance_snr_weighs_the_direction_that_whole_prediction_snr_hides():
    from dgq_compiler.report.analysis import guidance_snr_db, snr_db

    rng = np.random.default_rng(0)
    uncond = rng.standard_normal((2, 4, 8, 8))
    cond = uncond + 0.05 * rng.standard_normal((2, 4, 8, 8))   # the direction: small against eps, as in a UNet's
    fp = np.concatenate([uncond, cond])
    shared_error = fp + 0.1 * np.concatenate([np.ones_like(uncond), np.ones_like(cond)])  # both halves alike
    reversed_direction = np.concatenate([uncond, uncond - (cond - uncond)])               # the cond half only
    # an offset shared by both halves leaves the direction exact; reversing the direction costs less
    # whole-prediction SNR than that offset, yet makes the direction's error twice the direction (-6 dB)
    assert guidance_snr_db(fp, shared_error) > 100 and snr_db(fp, shared_error) < 30
    assert snr_db(fp, reversed_direction) > snr_db(fp, shared_error)
    assert guidance_snr_db(fp, reversed_direction) == pytest.approx(10 * np.log10(1 / 4))
    assert guidance_snr_db(fp, fp) == float("inf")
