"""Behaviour of the shipped choi-tiny weights (trained, not random): identities stay in their roles."""

import numpy as np
import pytest

from choi.pipelines.choi import CHOIPipeline
from choi.world import render_sample

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipe():
    return CHOIPipeline.from_pretrained("choi-tiny")


@pytest.fixture(scope="module")
def scene():
    """A HOI-World test layout (riding a bicycle), another person and another bicycle (unseen identities)."""
    return render_sample("test", 13, seed=0), render_sample("test", 5, seed=0), render_sample("test", 31, seed=0)


def _change(pipe, scene, swap: str) -> tuple[float, float]:
    """Mean absolute change inside the human mask and inside the object mask when one reference changes."""
    target, other_human, other_object = scene
    refs = {"human": target.human_ref, "object": target.object_ref}
    layout = (target.human_mask, target.object_mask)
    request = dict(interaction=target.text, mask=layout, background=target.background, seed=0)
    before = pipe(**refs, **request).images[0].astype(np.float32)
    refs[swap] = other_human.human_ref if swap == "human" else other_object.object_ref
    after = pipe(**refs, **request).images[0].astype(np.float32)
    diff = np.abs(after - before).mean(-1)
    only_human, only_object = layout[0] & ~layout[1], layout[1] & ~layout[0]
    return float(diff[only_human].mean()), float(diff[only_object].mean())


def test_changing_the_human_reference_changes_the_human_region_more(pipe, scene):
    human, obj = _change(pipe, scene, "human")
    assert human > 10 and human > 3 * obj, (human, obj)


def test_changing_the_object_reference_changes_the_object_region_more(pipe, scene):
    human, obj = _change(pipe, scene, "object")
    assert obj > 10 and obj > 3 * human, (human, obj)
