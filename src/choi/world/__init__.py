"""HOI-World: the procedural 2D world that generates CHOI's training and benchmark data.

- people (:mod:`~choi.world.bodies`, drawn by :mod:`~choi.world.figure`): 14-joint articulated,
  shaded figures; 87,091,200 identities (skin, hair, shirt + pattern, sleeves, trousers, shoes,
  height, girth);
- objects (:mod:`~choi.world.objects`): the 9 vocabulary categories, 4,752-12,672 instances each;
- interactions (:mod:`~choi.world.interactions`): one pose programme per vocabulary class;
- scenes (:mod:`~choi.world.scenes`): park, street, beach, room, snow, court;
- :func:`render_sample` / :func:`render_scene` / :func:`render_sequence` assemble full samples.

Train and test use disjoint identities: ids divisible by 10 are test (:func:`split_of_human`).

Example:
    >>> from choi.world import render_sample
    >>> sample = render_sample(split="train", index=17, seed=0, resolution=128)
    >>> sample.image.shape, sample.key
    ((128, 128, 3), 'train-00000017')
"""

from choi.world.bodies import N_HUMAN_IDENTITIES, HumanIdentity
from choi.world.objects import N_OBJECT_IDENTITIES, ObjectIdentity, ObjectPose
from choi.world.renderer import (
    FACINGS,
    RESOLUTIONS,
    SPLITS,
    WORLD_VERSION,
    class_probabilities,
    render_sample,
    render_scene,
    render_sequence,
    split_of_human,
    split_of_object,
)  # fmt: skip
from choi.world.scenes import SCENES

__all__ = [
    "FACINGS",
    "N_HUMAN_IDENTITIES",
    "N_OBJECT_IDENTITIES",
    "RESOLUTIONS",
    "SCENES",
    "SPLITS",
    "WORLD_VERSION",
    "HumanIdentity",
    "ObjectIdentity",
    "ObjectPose",
    "class_probabilities",
    "render_sample",
    "render_scene",
    "render_sequence",
    "split_of_human",
    "split_of_object",
]
