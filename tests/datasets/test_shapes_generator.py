"""The shapes scene generator: determinism, exact boxes and masks, caption spans, hard negatives."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualex.datasets.shapes_generator import (
    COLOURS,
    MAX_OBJECTS,
    SHAPES,
    SIZES,
    CaptionPlan,
    Description,
    ShapeScene,
    ShapesDataset,
    compose_caption,
    generate_scene,
    sample_scene,
    scene_seed,
    shape_mask,
    swap_colours,
    swap_shapes,
    tight_box,
)
from dualex.errors import InputError

PHRASE = re.compile(rf"({'|'.join(SIZES)}) ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})")


def described(caption: str) -> Counter:
    """Multiset of (size, colour, shape) a caption names."""
    return Counter(PHRASE.findall(caption))


def truth(scene: ShapeScene) -> Counter:
    return Counter((o.size, o.colour, o.shape) for o in scene.objects)


def test_same_seed_same_scene_and_different_seed_different_scene():
    a, b, c = generate_scene(11), generate_scene(11), generate_scene(12)
    assert np.array_equal(a.image, b.image)
    assert a.caption == b.caption and a.spans == b.spans and a.plan == b.plan
    assert [o.box for o in a.objects] == [o.box for o in b.objects]
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a.objects, b.objects, strict=True))
    assert not np.array_equal(a.image, c.image)


def test_image_format_and_object_count():
    s = generate_scene(3, n_objects=3, size=160)
    assert s.image.dtype == np.uint8 and s.image.shape == (160, 160, 3)
    assert len(s.objects) == 3 and len(s.spans) == 3 and s.size == (160, 160)
    counts = {len(generate_scene(i).objects) for i in range(60)}
    assert counts == set(range(1, MAX_OBJECTS + 1))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**40), n=st.integers(1, MAX_OBJECTS))
def test_boxes_are_tight_around_masks_and_objects_do_not_overlap(seed, n):
    s = generate_scene(seed, n_objects=n)
    H, W = s.size
    cover = np.zeros((H, W), dtype=int)
    for o in s.objects:
        x0, y0, x1, y1 = o.box
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
        m = o.mask
        assert m.any() and not m[:y0].any() and not m[y1:].any() and not m[:, :x0].any() and not m[:, x1:].any()
        # tight: every edge row/column of the box holds object pixels
        assert m[y0].any() and m[y1 - 1].any() and m[:, x0].any() and m[:, x1 - 1].any()
        assert tight_box(m) == o.box
        cover += m
    assert cover.max() <= 1
    # object pixels carry the object's colour (up to jitter and noise), background pixels do not
    for o in s.objects:
        mean = s.image[o.mask].astype(float).mean(0)
        # tint ~ N(0, 10) per channel (bounded here at 5 sigma), vertical shade within ±12, noise mean ≈ 0
        assert np.abs(mean - np.asarray(COLOURS[o.colour])).max() < 5 * 10 + 12 + 3


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**40))
def test_spans_name_their_objects(seed):
    s = generate_scene(seed)
    assert sorted(sp.object for sp in s.spans) == list(range(len(s.objects)))
    starts = [sp.start for sp in s.spans]
    assert starts == sorted(starts)
    for sp in s.spans:
        o = s.objects[sp.object]
        assert s.caption[sp.start : sp.end] == f"{o.size} {o.colour} {o.shape}" == o.phrase
        assert s.span_box(sp) == o.box
    assert s.phrases == [o.phrase for o in (s.objects[sp.object] for sp in s.spans)]
    assert s.boxes == [s.objects[sp.object].box for sp in s.spans]
    assert described(s.caption) == truth(s)


def test_caption_order_varies_and_relations_hold():
    orders = {generate_scene(i, n_objects=3).plan.order for i in range(40)}
    assert len(orders) > 3
    seen = 0
    for i in range(300):
        s = generate_scene(i, n_objects=2, relation_prob=1.0)
        if s.plan.relation is None:
            continue
        seen += 1
        a, b = (s.objects[k].box for k in s.plan.order)
        check = {"left": a[2] <= b[0], "right": a[0] >= b[2], "above": a[3] <= b[1], "below": a[1] >= b[3]}
        assert check[s.plan.relation], (s.caption, a, b)
        assert {"left": "left of", "right": "right of"}.get(s.plan.relation, s.plan.relation) in s.caption
    assert seen > 100


def test_compose_caption_spans():
    descs = [Description("small", "red", "circle"), Description("large", "blue", "star")]
    text, spans = compose_caption(descs, CaptionPlan((1, 0), template=1))
    assert text == "there is a large blue star and a small red circle"
    assert [(text[s.start : s.end], s.object) for s in spans] == [("large blue star", 1), ("small red circle", 0)]
    text, _ = compose_caption(descs, CaptionPlan((0, 1), relation="above"))
    assert text == "a small red circle above a large blue star"


def swappable(scene: ShapeScene, attr: str) -> bool:
    """Whether exchanging ``attr`` between two objects can change what the caption claims."""
    objs = [(o.size, o.colour, o.shape) for o in scene.objects]
    k = 1 if attr == "colour" else 2
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            a, b = list(objs[i]), list(objs[j])
            a[k], b[k] = b[k], a[k]
            new = [*objs[:i], tuple(a), *objs[i + 1 : j], tuple(b), *objs[j + 1 :]]
            if objs[i][k] != objs[j][k] and Counter(new) != Counter(objs):
                return True
    return False


@pytest.mark.parametrize("swap, attr", [(swap_colours, "colour"), (swap_shapes, "shape")])
def test_hard_negatives_differ_and_keep_the_other_attribute(swap, attr):
    k = 1 if attr == "colour" else 2
    n_swaps = 0
    for i in range(80):
        s = generate_scene(i)
        neg = swap(s, i)
        assert neg != s.caption
        assert described(neg) != truth(s)  # never a true description of the scene
        said, true = PHRASE.findall(neg), PHRASE.findall(s.caption)
        assert len(said) == len(s.objects)
        assert PHRASE.sub("X", neg) == PHRASE.sub("X", s.caption)  # same wording and order
        # only the swapped attribute changes, position by position
        assert [tuple(t[m] for m in range(3) if m != k) for t in said] == [
            tuple(t[m] for m in range(3) if m != k) for t in true
        ]
        changed = sum(a[k] != b[k] for a, b in zip(said, true, strict=True))
        if swappable(s, attr):  # a real exchange: same multiset of colours (shapes), two phrases differ
            n_swaps += 1
            assert Counter(t[k] for t in said) == Counter(t[k] for t in true)
            assert changed == 2
        else:  # nothing to exchange: one object's value replaced
            assert changed == 1
        assert swap(s, i) == neg  # seeded
    assert n_swaps > 40


def test_dataset_splits_are_disjoint_and_reproducible():
    train = {scene_seed(i, seed=s, split="train") for i in range(200) for s in range(3)}
    held = {scene_seed(i, seed=s, split="heldout") for i in range(200) for s in range(3)}
    assert not train & held
    ds = ShapesDataset(5, seed=2, split="heldout", n_objects=2)
    assert len(ds) == 5 and len(list(ds)) == 5
    s = ds[3]
    ref = generate_scene(scene_seed(3, seed=2, split="heldout"), n_objects=2)
    assert np.array_equal(s.image, ref.image) and s.caption == ref.caption and s.seed == ref.seed
    assert ds[-1].caption == ds[4].caption
    with pytest.raises(IndexError):
        ds[5]


def test_bad_arguments_raise_input_errors():
    with pytest.raises(InputError):
        generate_scene(0, n_objects=MAX_OBJECTS + 1)
    with pytest.raises(InputError):
        generate_scene(0, size=32)
    with pytest.raises(InputError):
        ShapesDataset(3, split="test")
    with pytest.raises(InputError):
        shape_mask("hexagon", 10, 10, 8, (20, 20))
    with pytest.raises(InputError):
        tight_box(np.zeros((4, 4), dtype=bool))


def test_save_and_load_round_trip(tmp_path):
    s = generate_scene(21, n_objects=4)
    s.save(tmp_path, "x")
    t = ShapeScene.load(tmp_path, "x")
    assert np.array_equal(s.image, t.image) and s.caption == t.caption and s.spans == t.spans and s.plan == t.plan
    assert all(np.array_equal(a.mask, b.mask) and a.box == b.box for a, b in zip(s.objects, t.objects, strict=True))


def test_bundled_sample_scene_is_a_regenerable_held_out_scene():
    s = sample_scene()
    assert s.seed is not None and s.seed % 2 == 1  # odd seeds are held out
    ref = generate_scene(s.seed, n_objects=len(s.objects))
    assert np.array_equal(s.image, ref.image) and s.caption == ref.caption
    assert [o.box for o in s.objects] == [o.box for o in ref.objects]


def test_the_bundled_sample_scene_is_the_generator_scene_of_its_seed():
    import numpy as np

    from dualex.datasets.shapes_generator import SAMPLE_SEED, generate_scene, sample_scene

    made, bundled = generate_scene(SAMPLE_SEED, n_objects=3), sample_scene()
    assert made.caption == bundled.caption and np.array_equal(np.asarray(made.image), np.asarray(bundled.image))
