"""Ground truth: masks are the visible pixels of each object, boxes are their tight boxes, and the
compositor gives a pixel to the object that contributes more than half of its colour."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import FRAMES, RENDER_RECIPES, SIZE, recipe, tracks_of

from generators import get_recipe, overlay_clip, render_clip
from smile_synth.clip import boxes_from_masks, labels_to_masks, masks_to_labels
from generators.compositor import composite, premultiply, sprite_boxes, sprite_matrices
from generators.objects import ObjectTrack
from smile_synth.errors import UserError

CROWDED = {  # many overlapping, partly transparent objects stress the ownership bookkeeping
    "black+objects crowded": ("black+objects", "objects.count=[4, 6]"),
    "mixed crowded": ("mixed", "objects.count=[3, 5]", "motion.opacity=[0.5, 1.0]", "objects.soft_edge_prob=0.7"),
}
CASES = {name: (name,) for name in RENDER_RECIPES} | CROWDED


def check_ground_truth(clip, frames, size):
    K = len(clip.meta["objects"])
    assert clip.video.shape == (frames, size, size, 3) and clip.video.dtype == np.uint8
    assert clip.masks.shape == (K, frames, size, size) and clip.masks.dtype == np.bool_
    assert clip.boxes.shape == (K, frames, 4) and clip.boxes.dtype == np.float32
    assert (clip.masks.sum(axis=0) <= 1).all(), "masks overlap"
    np.testing.assert_array_equal(clip.boxes, boxes_from_masks(clip.masks))
    empty = ~clip.masks.any(axis=(2, 3))
    np.testing.assert_array_equal(np.isnan(clip.boxes).all(axis=2), empty)
    np.testing.assert_array_equal(np.isnan(clip.boxes).any(axis=2), empty)


@pytest.mark.parametrize("case", list(CASES))
def test_masks_are_disjoint_and_boxes_are_tight(case):
    r = recipe(*CASES[case])
    for index in range(6):
        check_ground_truth(render_clip(r, 0, index, FRAMES, SIZE), FRAMES, SIZE)


def test_boxes_from_masks_by_hand():
    masks = np.zeros((2, 3, 10, 12), bool)
    masks[0, 0, 2:5, 3:7] = True  # rows 2..4, columns 3..6
    masks[0, 1, 9, 11] = True  # one pixel in the corner
    masks[1, 2, 0:10, 0:1] = True  # a full-height column
    boxes = boxes_from_masks(masks)
    assert boxes.dtype == np.float32
    np.testing.assert_array_equal(boxes[0, 0], [3, 2, 7, 5])  # x2, y2 exclusive
    np.testing.assert_array_equal(boxes[0, 1], [11, 9, 12, 10])
    np.testing.assert_array_equal(boxes[1, 2], [0, 0, 1, 10])
    for k, t in [(0, 2), (1, 0), (1, 1)]:
        assert np.isnan(boxes[k, t]).all()


def test_label_map_round_trip():
    clip = render_clip(recipe("black+objects", "objects.count=[3, 3]"), 0, 1, FRAMES, SIZE)
    labels = clip.label_map()
    assert labels.dtype == np.uint8 and labels.shape == clip.video.shape[:3]
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(labels_to_masks(labels, clip.num_objects), clip.masks)
    np.testing.assert_array_equal(masks_to_labels(clip.masks, labels.shape), labels)


def test_object_tracks_reproduce_the_rendered_clip():
    """tracks_of() (used by several tests) rebuilds exactly the objects render_clip drew."""
    r = recipe("black+objects")
    for index in range(4):
        clip = render_clip(r, 0, index, FRAMES, SIZE)
        tracks = tracks_of(r, 0, index, FRAMES, SIZE)
        video, masks, boxes = composite(np.zeros((FRAMES, SIZE, SIZE, 3), np.uint8), tracks)
        np.testing.assert_array_equal(video, clip.video)
        np.testing.assert_array_equal(masks, clip.masks)
        np.testing.assert_array_equal(boxes, clip.boxes)


# ---- colours on black ---------------------------------------------------------------------

def flat_colour(track) -> np.ndarray:
    rgb = track.sprite[..., :3][track.sprite[..., 3] > 0]
    colours = np.unique(rgb, axis=0)
    assert len(colours) == 1, "a flat fill has one colour"
    return colours[0].astype(np.float64)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_flat_objects_on_black_show_their_colour_in_their_mask(count):
    r = get_recipe("black+objects", ["objects.soft_edge_prob=0", "objects.fills={flat: 1}", f"objects.count=[{count}, {count}]"])
    frames, size = 6, SIZE
    inside = total = 0
    for index in range(10):
        clip = render_clip(r, 0, index, frames, size)
        for k, track in enumerate(tracks_of(r, 0, index, frames, size)):
            col = flat_colour(track)
            px = clip.video[clip.masks[k]].astype(np.float64)
            # owner share w in (1/2, 1]: colour = w * col + (1 - w) * (other objects or black)
            assert (px >= 0.5 * col - 2).all()
            assert (px <= np.maximum(col, 0.5 * col + 127.5) + 2).all()
            if count == 1:  # alone on black: exactly w * col, a darker shade of the same colour
                w = px.max(axis=1) / col.max()
                assert (w > 0.5 - 1 / 255).all()
                np.testing.assert_allclose(px, w[:, None] * col[None], atol=2)
            # away from the mask's edge the object is opaque: its own colour exactly
            core = np.stack([cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)) for m in clip.masks[k]]).astype(bool)
            close = (np.abs(clip.video[core].astype(np.float64) - col).max(axis=1) <= 2)
            inside += int(close.sum())
            total += int(core.sum())
    assert total > 500
    assert inside / total >= 0.97


def test_unmasked_pixels_are_dark_on_black():
    # With one object, a pixel outside its mask has alpha <= 1/2, so on black no channel reaches 128.
    r = get_recipe("black+objects", ["objects.soft_edge_prob=0", "objects.fills={flat: 1}", "objects.count=[1, 1]"])
    lit = 0
    for index in range(10):
        clip = render_clip(r, 0, index, 6, SIZE)
        outside = ~clip.masks.any(axis=0)
        assert (clip.video[outside].max(axis=1) < 128).all()
        lit += int((clip.video[outside].max(axis=1) > 0).sum())
    assert lit > 0, "edge pixels outside the masks should be partly covered"


# ---- overlay ------------------------------------------------------------------------------

def random_frames(seed: int, T: int = FRAMES, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (T, size, size, 3), dtype=np.uint8)


def test_overlay_changes_only_pixels_near_masks():
    r = get_recipe("overlay", ["objects.soft_edge_prob=0"])  # hard edges: only antialiased edge pixels blend
    for index in range(8):
        frames = random_frames(index)
        given = frames.copy()
        clip = overlay_clip(frames, r, seed=0, index=index)
        np.testing.assert_array_equal(frames, given)  # the caller's frames are not modified
        check_ground_truth(clip, FRAMES, SIZE)
        assert clip.meta["background"] == "given"
        near = clip.masks.any(axis=0).astype(np.uint8)
        near = np.stack([cv2.dilate(m, np.ones((5, 5), np.uint8)) for m in near]).astype(bool)  # within 2 px
        np.testing.assert_array_equal(clip.video[~near], given[~near])
        assert (clip.video != given).any()


def test_overlay_objects_do_not_depend_on_the_frames():
    for index in range(4):
        a = overlay_clip(random_frames(1), "overlay", seed=3, index=index)
        b = overlay_clip(np.zeros((FRAMES, SIZE, SIZE, 3), np.uint8), "overlay", seed=3, index=index)
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert a.meta == b.meta


@pytest.mark.parametrize("frames", [np.zeros((4, 64, 48, 3), np.uint8), np.zeros((4, 64, 64, 3), np.float32),
                                    np.zeros((4, 64, 64), np.uint8), np.zeros((1, 64, 64, 3), np.uint8),
                                    np.zeros((4, 40, 40, 3), np.uint8)],
                         ids=["not square", "float", "no channels", "one frame", "not multiple of 16"])
def test_overlay_rejects_bad_frames(frames):
    with pytest.raises(UserError):
        overlay_clip(frames)


# ---- the ownership rule, brute force --------------------------------------------------------

def square(x0: int, y0: int, side: int, alpha: int, rgb, opacity: float, T: int) -> ObjectTrack:
    """An axis-aligned square sprite placed with its top-left pixel exactly at (x0, y0)."""
    sprite = np.zeros((side, side, 4), np.uint8)
    sprite[..., :3] = rgb
    sprite[..., 3] = alpha
    centre = (x0 + (side - 1) / 2, y0 + (side - 1) / 2)
    return ObjectTrack(sprite=sprite, centres=np.tile(centre, (T, 1)).astype(np.float64), angle=np.zeros(T),
                       scale=np.ones(T), shear=np.zeros(T), opacity=np.full(T, float(opacity)),
                       category="square", trajectory="still", source="test")


def exact_labels(alphas: np.ndarray) -> np.ndarray:
    """The module docstring's rule: k owns a pixel iff a_k * prod_{j in front of k} (1 - a_j) > 1/2.

    alphas: float (K, ...) in [0, 1], back to front. Returns labels (0 none, k + 1)."""
    labels = np.zeros(alphas.shape[1:], np.uint8)
    for k in range(len(alphas)):
        w = alphas[k] * np.prod(1.0 - alphas[k + 1:], axis=0)
        labels[w > 0.5] = k + 1
    return labels


SQUARE_CASES = {  # back (sprite alpha, opacity), front (sprite alpha, opacity) -> owner of the overlap
    "opaque behind half-transparent": ((255, 1.0), (128, 1.0), 2),  # front 128/255 > 1/2
    "opacity 0.6 behind opacity 0.4": ((255, 0.6), (255, 0.4), 0),  # 0.6*0.6 = 0.36 and 0.4: nobody
    "opaque behind opacity 0.4": ((255, 1.0), (255, 0.4), 1),  # back keeps 0.6
    "half-transparent behind opacity 0.4": ((128, 1.0), (255, 0.4), 0),  # back 0.502 * 0.6
    "opacity 0.6 behind half-transparent": ((255, 0.6), (128, 1.0), 2),
}


@pytest.mark.parametrize("case", list(SQUARE_CASES))
def test_compositor_ownership_on_two_squares(case):
    (a_back, op_back), (a_front, op_front), overlap_owner = SQUARE_CASES[case]
    T, S = 1, 32
    back_rgb, front_rgb, bg = (200, 40, 40), (40, 40, 200), (30, 90, 30)
    tracks = [square(4, 4, 14, a_back, back_rgb, op_back, T), square(12, 10, 14, a_front, front_rgb, op_front, T)]
    video = np.empty((T, S, S, 3), np.uint8)
    video[...] = bg
    out, masks, boxes = composite(video, tracks)

    # alpha maps exactly as the blend uses them: sprite alpha scaled by opacity, quantised to 1/255
    alphas = np.zeros((2, S, S))
    alphas[0, 4:18, 4:18] = round(a_back * op_back) / 255
    alphas[1, 10:24, 12:26] = round(a_front * op_front) / 255
    want = exact_labels(alphas)
    np.testing.assert_array_equal(masks_to_labels(masks, (T, S, S))[0], want)
    np.testing.assert_array_equal(boxes, boxes_from_masks(masks))
    assert want[12, 14] == overlap_owner  # inside both squares
    assert want[5, 5] == (1 if round(a_back * op_back) > 127.5 else 0)  # back square alone
    assert want[22, 24] == (2 if round(a_front * op_front) > 127.5 else 0)  # front square alone

    # colours: back to front alpha blending over the background
    colour = np.empty((S, S, 3))
    colour[...] = bg
    for a, rgb in zip(alphas, (back_rgb, front_rgb)):
        colour = a[..., None] * np.array(rgb) + (1 - a[..., None]) * colour
    np.testing.assert_allclose(out[0].astype(np.float64), colour, atol=2)


@pytest.mark.parametrize("alphas,owner", [((131, 5, 1), 1),  # exact share 0.50168: object 0 owns
                                           ((233, 30, 97), 0)],  # exact share 0.49955: nobody owns
                         ids=["under-claims", "over-claims"])
def test_compositor_ownership_is_exact_near_one_half(alphas, owner):
    S = 16
    tracks = [square(2, 2, 10, a, (200, 200, 200), 1.0, 1) for a in alphas]  # stacked, all covering one area
    _, masks, _ = composite(np.zeros((1, S, S, 3), np.uint8), tracks)
    want = exact_labels(np.array(alphas, np.float64)[:, None] / 255)[0]
    assert want == owner  # the reference says so
    assert masks_to_labels(masks, (1, S, S))[0, 6, 6] == want


def warped_alphas(tracks, T: int, S: int) -> np.ndarray:
    """float (T, K, S, S): each object's alpha per frame, warped and opacity-scaled as the compositor does."""
    out = np.zeros((T, len(tracks), S, S))
    for k, tr in enumerate(tracks):
        M = sprite_matrices(tr)
        rois = sprite_boxes(M, *tr.sprite.shape[:2], S, S)
        sprite = premultiply(tr.sprite)
        for t in range(T):
            x0, y0, x1, y1 = rois[t]
            if x1 <= x0 or y1 <= y0 or tr.opacity[t] <= 0:
                continue
            m = M[t].copy()
            m[0, 2] -= x0
            m[1, 2] -= y0
            rgba = cv2.warpAffine(sprite, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)
            if tr.opacity[t] < 1:
                rgba = cv2.convertScaleAbs(rgba, alpha=tr.opacity[t])
            out[t, k, y0:y1, x0:x1] = rgba[..., 3] / 255
    return out


def test_compositor_follows_the_rule_on_random_crowded_clips():
    r = recipe("black+objects", "objects.count=[5, 7]", "motion.opacity=[0.4, 1.0]", "objects.soft_edge_prob=1",
               "motion.shear=0.3")
    T, S = 4, 48
    checked = 0
    for index in range(25):
        tracks = tracks_of(r, 1, index, T, S)
        _, masks, boxes = composite(np.zeros((T, S, S, 3), np.uint8), tracks)
        got = masks_to_labels(masks, (T, S, S))
        alphas = warped_alphas(tracks, T, S)
        for t in range(T):
            want = exact_labels(alphas[t])
            diff = got[t] != want
            if diff.any():  # only float32 rounding of a share within 1e-5 of 1/2 may flip a pixel
                for y, x in zip(*np.nonzero(diff)):
                    k = max(got[t, y, x], want[y, x]) - 1
                    share = alphas[t, k, y, x] * np.prod(1 - alphas[t, k + 1:, y, x])
                    assert abs(share - 0.5) < 1e-5, (index, t, y, x, got[t, y, x], want[y, x], share)
            checked += int((want > 0).sum())
        np.testing.assert_array_equal(boxes, boxes_from_masks(masks))
    assert checked > 1000
