"""Flow, occlusion and point tracks (generators.flow, issue 22) against closed forms, warps, cycles,
constructed crossings and a pixel-by-pixel reference of the documented rules.

Conventions under test (smile_synth.clip.Clip): flow[t] at pixel p of frame t is (dx, dy) in px to
where that surface is in frame t+1; flow_back[t] at p of frame t+1 points back to frame t; pixel
centres at integer coordinates.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from generators import ANNOTATIONS, check_annotations, overlay_clip, render_clip
from generators.backgrounds import BackgroundPlan
from generators.compositor import sprite_matrices
from generators.flow import annotate
from generators.objects import ObjectTrack, hold_pose
from generators.plan import ClipPlan, plan_clip, plan_overlay
from generators.recipes import recipe_names
from generators.render import paint_clip
from smile_synth.errors import UserError

from conftest import recipe

FRAMES, SIZE = 6, 64
BOTH = ("flow", "tracks")


# ---- building clips by hand -------------------------------------------------------------------

def textured_sprite(h: int, w: int, alpha: int = 255, seed: int = 0) -> np.ndarray:
    """uint8 (h, w, 4): a smooth colour texture (so warps can be checked), constant alpha."""
    rng = np.random.default_rng(seed)
    rgb = cv2.resize(rng.uniform(40, 215, (4, 4, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.dstack([np.clip(rgb, 0, 255).astype(np.uint8), np.full((h, w), alpha, np.uint8)])


def moving(sprite: np.ndarray, centres, angle=0.0, scale=1.0, shear=0.0, opacity=1.0, T: int = FRAMES) -> ObjectTrack:
    """A track with per-frame centres (T, 2) and scalars or (T,) curves for the rest."""
    curve = lambda v: np.broadcast_to(np.asarray(v, np.float64), (T,)).copy()   # noqa: E731
    return ObjectTrack(sprite=sprite, centres=np.asarray(centres, np.float64), angle=curve(angle), scale=curve(scale),
                       shear=curve(shear), opacity=curve(opacity), category="test", trajectory="test", source="test")


def square_at(x0: float, y0: float, side: int, step, T: int = FRAMES, seed: int = 0) -> ObjectTrack:
    """An opaque axis-aligned square whose top-left pixel is at (x0, y0) + t * step."""
    t = np.arange(T)[:, None]
    centre = np.array([x0 + (side - 1) / 2, y0 + (side - 1) / 2]) + t * np.asarray(step, np.float64)
    return moving(textured_sprite(side, side, seed=seed), centre, T=T)


def hand_plan(tracks: list[ObjectTrack], background: BackgroundPlan | None = None, static: bool = False,
              size: int = SIZE) -> ClipPlan:
    """A ClipPlan of the given tracks (back to front) over `background` (default black)."""
    r = recipe("black+objects", *(["motion.static=true"] if static else []))
    T = len(tracks[0].centres) if tracks else FRAMES
    return ClipPlan(r, 0, 0, T, size, background or BackgroundPlan("black"), tracks)


def annotated(plan: ClipPlan, annotations=BOTH):
    return annotate(plan, paint_clip(plan), annotations)


def pan_camera(T: int, size: int, per_px: float, start, velocity) -> np.ndarray:
    """Output px -> source px camera maps (T, 2, 3): source = per_px * p + start + t * velocity."""
    C = np.zeros((T, 2, 3))
    C[:, 0, 0] = C[:, 1, 1] = per_px
    C[:, :, 2] = np.asarray(start, np.float64) + np.arange(T)[:, None] * np.asarray(velocity, np.float64)
    return C


def any_clip(name: str, index: int, frames: int = FRAMES, size: int = SIZE, annotations=BOTH):
    """Clip `index` of preset `name` (cheap banks); overlay goes onto another recipe's frames."""
    if name == "overlay":
        given = render_clip(recipe("image+objects"), 7, index, frames, size).video
        return overlay_clip(given, recipe("overlay"), 0, index, annotations=annotations)
    return render_clip(recipe(name), 0, index, frames, size, annotations=annotations)


def any_plan(name: str, index: int, frames: int = FRAMES, size: int = SIZE) -> ClipPlan:
    if name == "overlay":
        return plan_overlay(recipe("overlay"), 0, index, frames, size)
    return plan_clip(recipe(name), 0, index, frames, size)


def grid(H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (H, W) x and y pixel coordinates."""
    return np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))


# ---- closed forms -----------------------------------------------------------------------------

def test_a_translation_gives_its_step_forward_and_minus_it_back():
    step = (2.5, -1.25)
    clip = annotated(hand_plan([square_at(10, 30, 12, step)]))
    labels = clip.label_map()
    for t in range(FRAMES - 1):
        on = labels[t] == 1
        assert on.sum() >= 100
        np.testing.assert_allclose(clip.flow[t][on], np.broadcast_to(step, (on.sum(), 2)), atol=1e-4)
        np.testing.assert_array_equal(clip.flow[t][~on], 0)   # black background: still
        back = labels[t + 1] == 1
        np.testing.assert_allclose(clip.flow_back[t][back], np.broadcast_to(np.negative(step), (back.sum(), 2)), atol=1e-4)
    assert clip.flow_valid.all() and clip.flow_back_valid.all()


def test_a_rotation_about_the_sprite_centre_gives_the_tangential_field():
    centre, turn = np.array([31.0, 33.0]), 4.0   # degrees per frame, counter-clockwise on screen
    angles = 10.0 + turn * np.arange(FRAMES)
    clip = annotated(hand_plan([moving(textured_sprite(21, 15), np.tile(centre, (FRAMES, 1)), angle=angles)]))
    X, Y = grid(SIZE, SIZE)
    v = np.stack([X - centre[0], Y - centre[1]], axis=-1)   # p - centre
    a = math.radians(turn)   # y points down: counter-clockwise on screen is (x, y) -> (c x + s y, -s x + c y)
    R = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    expected = v @ R.T - v
    for t in range(FRAMES - 1):
        on = clip.label_map()[t] == 1
        np.testing.assert_allclose(clip.flow[t][on], expected[on], atol=1e-3)
        tangential = np.abs((clip.flow[t][on] * v[on]).sum(-1)) / np.maximum(np.linalg.norm(v[on], axis=-1), 1)
        assert tangential.max() < 0.03 * np.linalg.norm(v[on], axis=-1).max()   # (cos a - 1) |v|: tiny


def test_a_scale_change_gives_the_radial_field():
    centre = np.array([32.0, 30.0])
    scales = 0.6 * 1.08 ** np.arange(FRAMES)
    clip = annotated(hand_plan([moving(textured_sprite(30, 30), np.tile(centre, (FRAMES, 1)), scale=scales)]))
    X, Y = grid(SIZE, SIZE)
    v = np.stack([X - centre[0], Y - centre[1]], axis=-1)
    for t in range(FRAMES - 1):
        on = clip.label_map()[t] == 1
        np.testing.assert_allclose(clip.flow[t][on], (scales[t + 1] / scales[t] - 1) * v[on], atol=1e-3)


def test_a_camera_pan_gives_a_constant_background_flow_and_warps_exactly():
    velocity, per_px = np.array([1.5, -0.75]), 1.25   # source px per frame, source px per output px
    camera = pan_camera(FRAMES, SIZE, per_px, (20.0, 40.0), velocity)
    colours = np.array([[0.1, 0.2, 0.9], [0.9, 0.6, 0.1]], np.float32)
    bg = BackgroundPlan("gradient", camera=camera, gradient=(colours, 0.7))
    clip = annotated(hand_plan([square_at(5, 5, 8, (1, 1))], background=bg))
    expected = -velocity / per_px   # the view slides over the source, the source moves the other way
    labels = clip.label_map()
    X, Y = grid(SIZE, SIZE)
    for t in range(FRAMES - 1):
        bgp = labels[t] == 0
        np.testing.assert_allclose(clip.flow[t][bgp], np.broadcast_to(expected, (bgp.sum(), 2)), atol=1e-4)
        bg_next = labels[t + 1] == 0
        np.testing.assert_allclose(clip.flow_back[t][bg_next], np.broadcast_to(-expected, (bg_next.sum(), 2)), atol=1e-4)
        rec = cv2.remap(clip.video[t + 1], X + clip.flow[t, ..., 0], Y + clip.flow[t, ..., 1], cv2.INTER_LINEAR)
        qx = np.clip(np.rint(X + expected[0]).astype(int), 0, SIZE - 1)
        qy = np.clip(np.rint(Y + expected[1]).astype(int), 0, SIZE - 1)
        inner = bgp & ~clip.occluded[t] & interior(labels[t]) & interior(labels[t + 1])[qy, qx]
        assert inner.sum() > 2000 and np.abs(rec[inner].astype(int) - clip.video[t][inner]).max() <= 2
        # pixels whose landing point leaves the frame are occluded
        lands_x = X + expected[0]
        assert clip.occluded[t][bgp & (np.rint(lands_x) > SIZE - 1)].all()
    assert clip.flow_valid.all()


# ---- zero flow: still backgrounds and the static control --------------------------------------

@pytest.mark.parametrize("kind", ["black", "solid"])
def test_still_plain_backgrounds_have_zero_valid_flow(kind):
    bg = BackgroundPlan(kind, colour=np.array([40, 90, 200], np.uint8) if kind == "solid" else None)
    clip = annotated(hand_plan([square_at(4, 4, 10, (3, 2))], background=bg))
    off = clip.label_map()[:-1] == 0
    assert not clip.flow[off].any() and clip.flow_valid.all()


@pytest.mark.parametrize("name", ["black+objects", "mixed", "noise+objects"])
def test_the_static_control_has_zero_flow_everywhere(name):
    for index in range(3):
        clip = render_clip(recipe(name, "motion.static=true"), 0, index, FRAMES, SIZE, annotations=BOTH)
        assert not clip.flow.any() and not clip.flow_back.any()
        assert clip.flow_valid.all() and not clip.occluded.any()   # nothing moves, nothing evolves
        assert (clip.tracks == clip.tracks[:, :1]).all() and clip.track_visible.all()


def test_overlay_flow_is_valid_on_object_pixels_only():
    for index in range(3):
        clip = any_clip("overlay", index)
        labels = clip.label_map()
        np.testing.assert_array_equal(clip.flow_valid, labels[:-1] > 0)
        np.testing.assert_array_equal(clip.flow_back_valid, labels[1:] > 0)
        assert not clip.flow[labels[:-1] == 0].any() and not clip.occluded[labels[:-1] == 0].any()


def test_evolving_noise_background_is_not_valid():
    plan = next(p for p in (plan_clip(recipe("noise+objects"), 0, i, FRAMES, SIZE) for i in range(40))
                if p.background.kind == "perlin3d")
    clip = annotated(plan)
    np.testing.assert_array_equal(clip.flow_valid, clip.label_map()[:-1] > 0)


# ---- warp, cycle and the per-pixel reference on every recipe ----------------------------------

def interior(labels: np.ndarray, margin: int = 2) -> np.ndarray:
    """bool (H, W): pixels at least `margin` px from any owner boundary and from the frame's edge."""
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    out = np.zeros(labels.shape, bool)
    for owner in np.unique(labels):
        out |= cv2.erode((labels == owner).astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    return out


@pytest.mark.parametrize("name", recipe_names())
def test_backward_warping_the_next_frame_reconstructs_object_pixels(name):
    """On valid, non-occluded object pixels >= 2 px from any boundary (in frame t, and where they land in
    frame t+1), frame t+1 sampled at p + flow(p) is frame t: PSNR >= 30 dB over 4 clips."""
    squared, count = 0.0, 0
    for index in range(4):
        clip = any_clip(name, index, annotations=("flow",))
        T, H, W = clip.video.shape[:3]
        labels = clip.label_map()
        inner = [interior(lab) for lab in labels]
        X, Y = grid(H, W)
        for t in range(T - 1):
            mx, my = X + clip.flow[t, ..., 0], Y + clip.flow[t, ..., 1]
            rec = cv2.remap(clip.video[t + 1], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            qx, qy = np.clip(np.rint(mx).astype(int), 0, W - 1), np.clip(np.rint(my).astype(int), 0, H - 1)
            use = clip.flow_valid[t] & ~clip.occluded[t] & (labels[t] > 0) & inner[t] & inner[t + 1][qy, qx]
            diff = rec[use].astype(np.float64) - clip.video[t][use]
            squared += float((diff ** 2).sum())
            count += diff.size
    assert count > 2000, f"{name}: too few pixels to judge ({count})"
    psnr = 10 * math.log10(255 ** 2 / max(squared / count, 1e-12))
    assert psnr >= 30, f"{name}: warp PSNR {psnr:.1f} dB"


def bilinear(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """field (H, W, C) sampled at float coordinates x, y (N,) (inside the frame): (N, C)."""
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x1, y1 = np.minimum(x0 + 1, field.shape[1] - 1), np.minimum(y0 + 1, field.shape[0] - 1)
    return ((1 - fy) * ((1 - fx) * field[y0, x0] + fx * field[y0, x1])
            + fy * ((1 - fx) * field[y1, x0] + fx * field[y1, x1]))


def same_owner_around(labels: np.ndarray, x: np.ndarray, y: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """bool (N,): the 2 x 2 pixels bilinear sampling at (x, y) reads all belong to `owner` (N,)."""
    H, W = labels.shape
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    inside = (x0 >= 0) & (y0 >= 0) & (x0 < W - 1) & (y0 < H - 1)
    x0, y0 = np.clip(x0, 0, W - 2), np.clip(y0, 0, H - 2)
    ok = inside.copy()
    for dy in (0, 1):
        for dx in (0, 1):
            ok &= labels[y0 + dy, x0 + dx] == owner
    return ok


@pytest.mark.parametrize("name", recipe_names())
def test_forward_then_backward_flow_returns_to_the_start(name):
    """|F(p) + B(p + F(p))| < 0.1 px on valid, non-occluded pixels (B read bilinearly where its 2 x 2
    neighbourhood at p + F(p) is p's owner: one affine there, so the sample is exact)."""
    checked = 0
    for index in range(3):
        clip = any_clip(name, index, annotations=("flow",))
        labels = clip.label_map()
        H, W = labels.shape[1:]
        X, Y = grid(H, W)
        for t in range(clip.num_frames - 1):
            use = clip.flow_valid[t] & ~clip.occluded[t]
            qx, qy = (X + clip.flow[t, ..., 0])[use], (Y + clip.flow[t, ..., 1])[use]
            ok = same_owner_around(labels[t + 1], qx, qy, labels[t][use])
            back = bilinear(clip.flow_back[t], qx[ok], qy[ok])
            err = np.linalg.norm(clip.flow[t][use][ok] + back, axis=-1)
            assert err.size == 0 or err.max() < 0.1, f"{name} clip {index} step {t}: cycle error {err.max():.3f} px"
            checked += err.size
    assert checked > 1000


def reference_fields(plan: ClipPlan, clip) -> dict[str, np.ndarray]:
    """The documented rules applied pixel by pixel, straight from the plan: owner from the label map,
    q = P_o[t+1] P_o[t]^-1 p with P the owner's surface -> frame map; occluded where the nearest pixel
    of q is outside the frame or owned by another surface; the background (still when its camera is)
    is valid unless it evolves (perlin3d) or is given (overlay). Invalid pixels: flow 0, not occluded."""
    T, H, W = clip.video.shape[:3]
    labels = clip.label_map()
    posed = [hold_pose(t, T) for t in plan.tracks] if plan.static else plan.tracks
    bg = plan.background
    P = np.zeros((len(posed) + 1, T, 3, 3))
    P[..., 2, 2] = 1
    P[0, :, :2] = np.eye(2, 3)
    if bg is not None and bg.camera is not None and not plan.static and not np.allclose(bg.camera, bg.camera[:1]):
        C = np.zeros((T, 3, 3))
        C[:, :2], C[:, 2, 2] = bg.camera, 1
        P[0] = np.linalg.inv(C)
    for k, track in enumerate(posed):
        P[k + 1, :, :2] = sprite_matrices(track)
    bg_valid = bg is not None and (plan.static or bg.kind != "perlin3d")
    X, Y = grid(H, W)
    p = np.stack([X, Y, np.ones_like(X)], axis=-1).astype(np.float64)   # (H, W, 3)
    out = {k: [] for k in ("flow", "flow_back", "flow_valid", "occluded")}
    for t in range(T - 1):
        for name, a, b in (("flow", t, t + 1), ("flow_back", t + 1, t)):
            A = P[:, b] @ np.linalg.inv(P[:, a])            # (K+1, 3, 3) per owner
            q = np.einsum("hwij,hwj->hwi", A[labels[a]], p)[..., :2]
            valid = (labels[a] > 0) | bg_valid
            out[name].append(np.where(valid[..., None], q - p[..., :2], 0))
            if name == "flow":
                out["flow_valid"].append(valid)
                n = np.floor(q + 0.5).astype(int)
                inside = (n[..., 0] >= 0) & (n[..., 0] < W) & (n[..., 1] >= 0) & (n[..., 1] < H)
                there = labels[b][np.clip(n[..., 1], 0, H - 1), np.clip(n[..., 0], 0, W - 1)]
                out["occluded"].append(valid & (~inside | (there != labels[a])))
    return {k: np.stack(v) for k, v in out.items()}


@pytest.mark.parametrize("name", recipe_names())
def test_fields_match_a_pixel_by_pixel_reference_of_the_rules(name):
    for index in range(3):
        plan = any_plan(name, index)
        clip = any_clip(name, index, annotations=("flow",))
        ref = reference_fields(plan, clip)
        np.testing.assert_allclose(clip.flow, ref["flow"], atol=1e-3)
        np.testing.assert_allclose(clip.flow_back, ref["flow_back"], atol=1e-3)
        np.testing.assert_array_equal(clip.flow_valid, ref["flow_valid"])
        # OpenCV rounds the landing point to 1/1024 px before picking the nearest pixel: a tie may go either way
        assert (clip.occluded != ref["occluded"]).mean() < 1e-3


# ---- occlusion on constructed crossings -------------------------------------------------------

def square_box(x0: int, y0: int, side: int) -> np.ndarray:
    """bool (SIZE, SIZE): the pixels of an axis-aligned square with top-left pixel (x0, y0)."""
    m = np.zeros((SIZE, SIZE), bool)
    m[max(y0, 0):max(y0 + side, 0), max(x0, 0):max(x0 + side, 0)] = True
    return m


@pytest.mark.parametrize("back_step,front_step", [((3, 0), (-2, 0)), ((2, 1), (0, -3)), ((4, 0), (4, 0))],
                         ids=["head-on", "crossing", "convoy"])
def test_pixels_covered_next_frame_by_an_object_in_front_are_occluded_and_no_others(back_step, front_step):
    T, side = 8, 14
    back0, front0 = (10, 24), (40, 26) if front_step[1] == 0 else (30, 50)
    if back_step == front_step:
        front0 = (22, 24)   # side by side, both moving right: nothing covers anything
    plan = hand_plan([square_at(*back0, side, back_step, T=T, seed=1), square_at(*front0, side, front_step, T=T, seed=2)])
    clip = annotated(plan, ("flow",))
    covered_any = False
    for t in range(T - 1):
        at = lambda origin, step, s: (origin[0] + step[0] * s, origin[1] + step[1] * s)   # noqa: E731
        back_now, front_now = square_box(*at(back0, back_step, t), side), square_box(*at(front0, front_step, t), side)
        back_next = square_box(*at(back0, back_step, t + 1), side)
        front_next = square_box(*at(front0, front_step, t + 1), side)
        visible_back = back_now & ~front_now
        # the back square's pixel p lands on p + step: hidden if the front square owns that pixel next
        lands_on_front = np.zeros_like(visible_back)
        ys, xs = np.nonzero(visible_back)
        qx, qy = xs + back_step[0], ys + back_step[1]
        inside = (qx >= 0) & (qx < SIZE) & (qy >= 0) & (qy < SIZE)
        lands_on_front[ys, xs] = ~inside | front_next[np.clip(qy, 0, SIZE - 1), np.clip(qx, 0, SIZE - 1)]
        background_covered = ~back_now & ~front_now & (back_next | front_next)
        expected = lands_on_front | background_covered   # the front square is never hidden here
        np.testing.assert_array_equal(clip.occluded[t], expected, err_msg=f"step {t}")
        covered_any |= bool(lands_on_front.any())
    assert covered_any == (back_step != front_step)


def test_pixels_leaving_the_frame_are_occluded():
    clip = annotated(hand_plan([square_at(50, 20, 10, (3, 0))]), ("flow",))
    labels = clip.label_map()
    X = np.arange(SIZE)[None, :].repeat(SIZE, 0)
    for t in range(FRAMES - 1):
        on = labels[t] == 1
        np.testing.assert_array_equal(clip.occluded[t][on], (X + 3)[on] > SIZE - 1)


# ---- point tracks -----------------------------------------------------------------------------

def test_tracks_of_a_translation_are_their_start_plus_the_steps():
    step = np.array([2.0, -1.5])
    clip = annotated(hand_plan([square_at(8, 40, 10, step)]))
    assert clip.tracks.shape == (32, FRAMES, 2) and clip.tracks.dtype == np.float32
    start = clip.tracks[:, 0]
    assert (start == np.rint(start)).all() and clip.masks[0, 0][start[:, 1].astype(int), start[:, 0].astype(int)].all()
    np.testing.assert_allclose(clip.tracks, start[:, None] + np.arange(FRAMES)[None, :, None] * step, atol=1e-4)
    assert len(np.unique(start, axis=0)) == 32   # drawn without replacement


@pytest.mark.parametrize("name", ["black+objects", "mixed", "overlay"])
def test_tracks_follow_the_flow_and_agree_with_the_masks(name):
    steps = 0
    for index in range(3):
        clip = any_clip(name, index)
        K, T, H, W = clip.masks.shape
        labels = clip.label_map()
        xy, vis = clip.tracks, clip.track_visible
        assert xy.shape[1:] == (T, 2) and vis.shape == xy.shape[:2] and len(xy) <= 32 * K
        owner = labels[0][xy[:, 0, 1].astype(int), xy[:, 0, 0].astype(int)]   # frame 0: pixel centres owned by the object
        assert (owner > 0).all() and vis[:, 0].all()
        q = np.rint(xy).astype(int)
        inside = (q[..., 0] >= 0) & (q[..., 0] < W) & (q[..., 1] >= 0) & (q[..., 1] < H)
        seen = labels[np.arange(T), np.clip(q[..., 1], 0, H - 1), np.clip(q[..., 0], 0, W - 1)]
        np.testing.assert_array_equal(vis, inside & (seen == owner[:, None]))
        for t in range(T - 1):   # the flow chain: where the point is visible, its flow is its next step
            n = np.nonzero(vis[:, t])[0]
            ok = same_owner_around(labels[t], xy[n, t, 0], xy[n, t, 1], owner[n])
            n = n[ok]
            step = bilinear(clip.flow[t], xy[n, t, 0], xy[n, t, 1])
            np.testing.assert_allclose(xy[n, t] + step, xy[n, t + 1], atol=1e-2)
            steps += len(n)
    assert steps > 100


def test_track_points_have_their_own_random_stream():
    """Same clip with or without tracks, and the same points whatever else is asked for."""
    plain = render_clip(recipe("mixed"), 3, 5, FRAMES, SIZE)
    both = render_clip(recipe("mixed"), 3, 5, FRAMES, SIZE, annotations=BOTH)
    only = render_clip(recipe("mixed"), 3, 5, FRAMES, SIZE, annotations=("tracks",))
    for field in ("video", "masks", "boxes"):
        np.testing.assert_array_equal(getattr(plain, field), getattr(both, field))
    assert plain.meta == both.meta
    np.testing.assert_array_equal(both.tracks, only.tracks)
    assert only.flow is None and plain.tracks is None and plain.flow is None


def test_no_objects_gives_no_tracks_and_background_flow_only():
    clip = annotated(hand_plan([]))
    assert clip.tracks.shape == (0, FRAMES, 2) and clip.track_visible.shape == (0, FRAMES)
    assert not clip.flow.any() and not clip.occluded.any()


# ---- the API ----------------------------------------------------------------------------------

def test_annotation_fields_have_the_documented_shapes_and_types():
    clip = any_clip("mixed", 1)
    T, H, W = clip.video.shape[:3]
    for field in ("flow", "flow_back"):
        assert getattr(clip, field).shape == (T - 1, H, W, 2) and getattr(clip, field).dtype == np.float32
    for field in ("flow_valid", "flow_back_valid", "occluded"):
        assert getattr(clip, field).shape == (T - 1, H, W) and getattr(clip, field).dtype == bool


def test_annotation_names_are_checked_with_one_clear_line():
    assert check_annotations("tracks,flow") == ANNOTATIONS == check_annotations(["flow", "tracks", "flow"])
    assert check_annotations(()) == ()
    with pytest.raises(UserError, match=r"unknown annotation 'depth'; choose from flow, tracks"):
        render_clip("black+objects", 0, 0, FRAMES, SIZE, annotations=("depth",))
    with pytest.raises(UserError, match="unknown annotation"):
        overlay_clip(np.zeros((FRAMES, SIZE, SIZE, 3), np.uint8), annotations="flow,optical")
