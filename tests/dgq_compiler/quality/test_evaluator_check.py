"""The evaluator stays validated: per-attribute accuracy on freshly rendered scenes of both prompt sets, with a
threshold that a broken evaluator fails."""
import copy

import numpy as np
import pytest
import torch

from dgq_compiler.quality.evaluator_check import THRESHOLD, attribute_accuracy, check_evaluator
from models import shapes_dataset as ds
from models.evaluator import load_evaluator
from models.prompt_sets import load_prompt_set


@pytest.fixture(scope="module")
def evaluator():
    return load_evaluator()


@pytest.fixture(scope="module")
def prompt_sets():
    return [load_prompt_set("heldout"), load_prompt_set("rephrased")]


def test_shipped_evaluator_reads_every_attribute_of_fresh_scenes_of_both_sets(evaluator, prompt_sets):
    check = check_evaluator(evaluator, prompt_sets, per_prompt=4)
    assert check["scenes"] == 4 * 64
    assert set(check["accuracy"]) == set(ds.ATTRIBUTES)
    assert check["passed"], check["accuracy"]
    assert min(check["accuracy"].values()) >= THRESHOLD


def test_shipped_evaluator_on_scenes_of_any_combination(evaluator):
    batch = ds.render_batch(np.random.default_rng(777), 256, heldout=None)  # a seed no other test uses
    accuracy = attribute_accuracy(evaluator, batch)
    assert min(accuracy.values()) >= THRESHOLD, accuracy


def _broken(evaluator, head: str):
    """The evaluator with one head's classes rotated: it still runs, but names the wrong class."""
    broken = copy.deepcopy(evaluator)
    layer = broken.network.heads[head]
    with torch.no_grad():
        layer.weight.copy_(torch.roll(layer.weight, 1, dims=0))
        layer.bias.copy_(torch.roll(layer.bias, 1, dims=0))
    return broken


@pytest.mark.parametrize("head", ["position", "colour"])
def test_a_broken_evaluator_fails_the_check_on_that_attribute(evaluator, prompt_sets, head):
    check = check_evaluator(_broken(evaluator, head), prompt_sets, per_prompt=2)
    assert not check["passed"]
    assert check["accuracy"][head] < 0.5
    others = {k: v for k, v in check["accuracy"].items() if k != head}
    assert min(others.values()) >= THRESHOLD  # the check names the attribute that broke


def test_untrained_weights_fail(evaluator, prompt_sets):
    noisy = copy.deepcopy(evaluator)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in noisy.network.parameters():
            p.add_(torch.randn_like(p) * p.std().clamp_min(1e-3) * 2)
    assert not check_evaluator(noisy, prompt_sets, per_prompt=2)["passed"]
