"""Exact optical flow, occlusion and point tracks of a clip, from the affines that painted it.

Each pixel has one owner: the object the compositor's mask rule gives it (clip.masks), else the
background. Every owner moves by one affine per frame step, so its flow is exact:
object k: p -> M_{t+1} M_t^{-1} p (M: sprite px -> frame px, compositor.sprite_matrices);
background: p -> C_{t+1}^{-1} C_t p (C: output px -> source px, backgrounds.camera_matrices), the identity
for black and solid. Pixel centres sit at integer coordinates, as in OpenCV's warps that paint the clip.
Fields are filled per object over its box only (the background, when it moves, over the frame): a clip
over a still background pays for its objects' pixels, not for whole frames.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from smile_synth.clip import Clip
from smile_synth.config import MAX_SIZE
from smile_synth.errors import UserError, shown

from .compositor import sprite_matrices
from .objects import hold_pose
from .plan import ClipPlan
from .seeding import stable_hash

ANNOTATIONS = ("flow", "tracks")   # the only annotation names
TRACKS_PER_OBJECT = 32              # points per object, fewer when it shows fewer pixels in frame 0
_EVOLVING = ("perlin3d",)           # background kinds whose texture changes in time: motion undefined
_Y1 = np.stack([np.arange(MAX_SIZE), np.ones(MAX_SIZE)], axis=1).astype(np.float32)   # (y, 1) per row
_NEAREST = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP   # dst(p) = src(nearest pixel of M p)


def check_annotations(names: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The annotation names (a sequence, or one comma-separated string) in ANNOTATIONS order, each once."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    for name in names:
        if name not in ANNOTATIONS:
            raise UserError(f"unknown annotation {shown(name)}; choose from {', '.join(ANNOTATIONS)}")
    return tuple(a for a in ANNOTATIONS if a in names)


def homogeneous(M: np.ndarray) -> np.ndarray:
    """(..., 2, 3) affines -> (..., 3, 3) with the row (0, 0, 1)."""
    out = np.zeros(M.shape[:-2] + (3, 3))
    out[..., :2, :] = M
    out[..., 2, 2] = 1.0
    return out


def placements(plan: ClipPlan) -> np.ndarray:
    """float64 (K+1, T, 2, 3): where each owner's surface sits in frame t, surface -> frame px, as the
    rasteriser paints the plan. Owner 0 is the background (the inverse camera; the identity without one),
    k+1 object k (compositor.sprite_matrices). With motion.static every pose is held at frame 0."""
    T = plan.frames
    posed = [hold_pose(t, T) for t in plan.tracks] if plan.static else plan.tracks
    bg = plan.background
    out = np.empty((len(posed) + 1, T, 2, 3))
    if bg is None or bg.camera is None or plan.static or np.allclose(bg.camera, bg.camera[:1]):
        out[0] = np.eye(2, 3)   # painted with one warp (backgrounds.view_still): it does not move
    else:
        out[0] = np.linalg.inv(homogeneous(bg.camera))[:, :2]
    for k, track in enumerate(posed):
        out[k + 1] = sprite_matrices(track)
    return out


def step_affines(placed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-step maps of surfaces placed by `placed` (..., T, 2, 3), surface -> frame px.

    Returns (forward, backward), float64 (..., T-1, 2, 3): frame t px -> frame t+1 px, and back."""
    H = homogeneous(placed)
    inv = np.linalg.inv(H)
    forward = H[..., 1:, :, :] @ inv[..., :-1, :, :]
    backward = H[..., :-1, :, :] @ inv[..., 1:, :, :]
    held = np.all(placed[..., 1:, :, :] == placed[..., :-1, :, :], axis=(-2, -1))
    forward[held] = backward[held] = np.eye(3)   # exactly: a held pose has zero flow, not 1e-16
    return forward[..., :2, :], backward[..., :2, :]


@dataclass
class Motion:
    """The per-step affines of every owner of a clip: index 0 the background, k+1 object k.

    forward/backward: float64 (K+1, T-1, 2, 3), frame t px -> frame t+1 px and frame t+1 px -> frame t px.
    background_valid: the background's motion is defined (False for evolving textures and given frames).
    background_still: the background does not move (its flow is zero)."""
    forward: np.ndarray
    backward: np.ndarray
    background_valid: bool
    background_still: bool


def clip_motion(plan: ClipPlan, placed: np.ndarray) -> Motion:
    """The Motion of a plan whose owners' placements (K+1, T, 2, 3) are `placed` (see placements)."""
    forward, backward = step_affines(placed)
    bg = plan.background
    valid = bg is not None and (plan.static or bg.kind not in _EVOLVING)
    still = bool((placed[0] == np.eye(2, 3)).all())   # placements gives a still background exactly the identity
    return Motion(forward, backward, valid, still)


def field_rows(affines: np.ndarray, W: int) -> np.ndarray:
    """float32 (..., 2, 2W): the flow fields A p - p of affines (..., 2, 3) as two rows R, so that at
    the pixels of row y, (dx, dy) interleaved along x = (y, 1) @ R: an affine field is separable."""
    D = affines - np.eye(2, 3)
    xs = np.arange(W, dtype=np.float64)
    rows = np.empty(affines.shape[:-2] + (2, W, 2), np.float32)
    rows[..., 0, :, 0] = D[..., 0, 1, None]                       # dx per unit of y
    rows[..., 0, :, 1] = D[..., 1, 1, None]                       # dy per unit of y
    rows[..., 1, :, 0] = D[..., 0, 0, None] * xs + D[..., 0, 2, None]
    rows[..., 1, :, 1] = D[..., 1, 0, None] * xs + D[..., 1, 2, None]
    return rows.reshape(affines.shape[:-2] + (2, 2 * W))


def box_field(rows: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """float32 (y1-y0, x1-x0, 2): the field of `rows` (2, 2W) (see field_rows) over the box [x0, x1) x [y0, y1)."""
    return (_Y1[y0:y1] @ rows[:, 2 * x0:2 * x1]).reshape(y1 - y0, x1 - x0, 2)


def box_affines(affines: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """float64 (K, S, 2, 3): affines (K, S, 2, 3), frame px -> frame px, made to take box px instead (origin
    at the top-left corner of each box in boxes (K, S, 4), x1 y1 x2 y2); NaN where the box is NaN. What a
    warp into the box needs."""
    out = affines.copy()
    out[..., 2] += np.einsum("ksij,ksj->ksi", affines[..., :2], boxes[..., :2])
    return out


def fill_background(flow: np.ndarray, occluded: np.ndarray | None, masks_to: np.ndarray, affines: np.ndarray,
                    motion: Motion) -> None:
    """The background's flow of S frame steps in one direction, in place, over whole frames: fill_objects
    then overwrites the objects' pixels, so no mask is needed. An invalid background is left at 0, not
    occluded.

    flow: float32 (S, H, W, 2), zeros on entry unless the background is valid and moves (then every pixel
    is written here); occluded: bool (S, H, W), written whole unless the background is invalid (then False
    on entry), or None (not wanted); masks_to: bool (K, S, H, W), the objects' pixels in the frames the
    steps go to; affines:
    (S, 2, 3) the background's map per step. A background pixel is occluded when the nearest pixel to where
    it lands is outside the frame or an object's."""
    if not motion.background_valid:
        return
    if motion.background_still:   # flow 0; p stays at p, covered where an object owns it next
        if occluded is not None:
            np.any(masks_to, axis=0, out=occluded)
        return
    S, H, W = flow.shape[:3]
    rows = field_rows(affines, W)
    for t in range(S):
        np.matmul(_Y1[:H], rows[t], out=flow[t].reshape(H, 2 * W))
    if occluded is not None:
        covered = masks_to.any(axis=0).view(np.uint8)
        occ = occluded.view(np.uint8)
        for t in range(S):   # landing outside the frame counts as covered
            cv2.warpAffine(covered[t], affines[t], (W, H), dst=occ[t], flags=_NEAREST,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=1)


def fill_objects(flow: np.ndarray, flow_back: np.ndarray, occluded: np.ndarray, masks: np.ndarray,
                 boxes: np.ndarray, motion: Motion) -> None:
    """The objects' part of both directions, in place, each object over its box only (after
    fill_background: each object pixel's flow and occlusion are written whatever was there).

    flow, flow_back: float32 (T-1, H, W, 2); occluded: bool (T-1, H, W); masks: bool (K, T, H, W);
    boxes: (K, T, 4) x1 y1 x2 y2 of the masks (NaN: empty). An object pixel is occluded when the nearest
    pixel to where it lands (OpenCV rounds to 1/1024 px first) is outside the frame or not the object's."""
    K, T, H, W = masks.shape
    forward, backward = motion.forward[1:], motion.backward[1:]
    rows_f, rows_b = field_rows(forward, W), field_rows(backward, W)
    eye = np.eye(2, 3)
    moves_f = np.any(forward != eye, axis=(2, 3)).tolist()   # (K, T-1): else the flow stays 0
    moves_b = np.any(backward != eye, axis=(2, 3)).tolist()
    to_box = box_affines(forward, boxes[:, :-1])
    occ, owned = occluded.view(np.uint8), masks.view(np.uint8)   # OpenCV takes masks as uint8
    corners = np.nan_to_num(boxes, nan=-1).astype(np.intp).tolist()   # (K, T, 4); -1: not visible
    for k in range(K):
        for t, (x0, y0, x1, y1) in enumerate(corners[k]):
            if x0 < 0:
                continue
            mine = owned[k, t, y0:y1, x0:x1]
            if t < T - 1:   # forward step t starts here
                if moves_f[k][t]:
                    cv2.copyTo(box_field(rows_f[k, t], x0, y0, x1, y1), mine, flow[t, y0:y1, x0:x1])
                stays = cv2.warpAffine(owned[k, t + 1], to_box[k, t], (x1 - x0, y1 - y0),
                                       flags=_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                cv2.subtract(mine, stays, dst=occ[t, y0:y1, x0:x1], mask=mine)   # mine and not stays
            if t > 0 and moves_b[k][t - 1]:   # backward step t-1 starts here
                cv2.copyTo(box_field(rows_b[k, t - 1], x0, y0, x1, y1), mine, flow_back[t - 1, y0:y1, x0:x1])


def flow_fields(clip: Clip, motion: Motion) -> dict[str, np.ndarray]:
    """The four flow fields and occlusion of a painted clip (see smile_synth.clip.Clip), as Clip keywords."""
    T, H, W = clip.video.shape[:3]
    moving = motion.background_valid and not motion.background_still   # then fill_background writes every flow
    flow = (np.empty if moving else np.zeros)((T - 1, H, W, 2), np.float32)
    flow_back = (np.empty if moving else np.zeros)((T - 1, H, W, 2), np.float32)
    occluded = (np.empty if motion.background_valid else np.zeros)((T - 1, H, W), bool)   # likewise
    fill_background(flow, occluded, clip.masks[:, 1:], motion.forward[0], motion)
    fill_background(flow_back, None, clip.masks[:, :-1], motion.backward[0], motion)
    fill_objects(flow, flow_back, occluded, clip.masks, clip.boxes, motion)
    if motion.background_valid:
        valid, valid_back = np.ones((T - 1, H, W), bool), np.ones((T - 1, H, W), bool)
    else:   # object pixels only
        objects = clip.masks.any(axis=0)
        valid, valid_back = objects[:-1].copy(), objects[1:].copy()
    return dict(flow=flow, flow_back=flow_back, flow_valid=valid, flow_back_valid=valid_back, occluded=occluded)


def tracks_rng(plan: ClipPlan) -> np.random.Generator:
    """The track points' own stream: the clip's draws (clip_rngs) stay as they are with or without tracks."""
    key = stable_hash(plan.recipe.draw_key + "/tracks")
    return np.random.default_rng(np.random.SeedSequence([key, int(plan.seed), int(plan.index)]))


def point_tracks(plan: ClipPlan, clip: Clip, placed: np.ndarray) -> dict[str, np.ndarray]:
    """Up to TRACKS_PER_OBJECT points per object, drawn without replacement among the pixel centres it
    owns in frame 0, followed through its placements `placed` (K+1, T, 2, 3): x_t = M_t M_0^{-1} x_0.

    Returns Clip keywords: tracks float32 (N, T, 2) x, y px (object 0's points first, then object 1's,
    ...), track_visible bool (N, T): the nearest pixel (np.rint) is in the frame and owned by the object."""
    K, T, H, W = clip.masks.shape
    rng = tracks_rng(plan)
    tracks, owners = [np.zeros((0, T, 2))], [np.zeros(0, np.intp)]
    for k in range(K):
        ys, xs = np.nonzero(clip.masks[k, 0])
        if len(xs) == 0:
            continue
        pick = rng.choice(len(xs), size=min(TRACKS_PER_OBJECT, len(xs)), replace=False)
        p0 = np.stack([xs[pick], ys[pick], np.ones(len(pick))]).astype(np.float64)   # (3, n)
        M = homogeneous(placed[k + 1])
        tracks.append(((M @ np.linalg.inv(M[0]))[:, :2] @ p0).transpose(2, 0, 1))   # (n, T, 2)
        owners.append(np.full(len(pick), k))
    xy = np.concatenate(tracks).astype(np.float32)
    owner = np.concatenate(owners)[:, None]
    q = np.rint(xy).astype(np.intp)
    inside = (q[..., 0] >= 0) & (q[..., 0] < W) & (q[..., 1] >= 0) & (q[..., 1] < H)
    owned = clip.masks[owner, np.arange(T)[None, :], np.clip(q[..., 1], 0, H - 1), np.clip(q[..., 0], 0, W - 1)]
    return dict(tracks=xy, track_visible=inside & owned)


def annotate(plan: ClipPlan, clip: Clip, annotations: str | tuple[str, ...] | list[str]) -> Clip:
    """The clip painted from `plan`, with the annotations named (see ANNOTATIONS) added; the same clip
    when none are named. Pixels, masks, boxes and meta are the clip's own."""
    names = check_annotations(annotations)
    if not names:
        return clip
    placed = placements(plan)
    extra: dict[str, np.ndarray] = {}
    if "flow" in names:
        extra.update(flow_fields(clip, clip_motion(plan, placed)))
    if "tracks" in names:
        extra.update(point_tracks(plan, clip, placed))
    return replace(clip, **extra)
