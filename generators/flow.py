"""Exact optical flow, occlusion and point tracks of a clip, from the affines that painted it.

Each pixel has one owner: the object the compositor's mask rule gives it (clip.masks), else the
background. Every owner moves by one affine per frame step, so its flow is exact:
object k: p -> M_{t+1} M_t^{-1} p (M: sprite px -> frame px, compositor.sprite_matrices);
background: p -> C_{t+1}^{-1} C_t p (C: output px -> source px, backgrounds.camera_matrices), the identity
for black and solid. Pixel centres sit at integer coordinates, as in OpenCV's warps that paint the clip.
Fields are filled per owner over its box only: a clip over a still background pays for its objects'
pixels, not for whole frames.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from smile_synth.clip import Clip, masks_to_labels
from smile_synth.errors import UserError, shown

from .compositor import sprite_matrices
from .objects import hold_pose
from .plan import ClipPlan
from .seeding import stable_hash

ANNOTATIONS = ("flow", "tracks")   # the only annotation names
TRACKS_PER_OBJECT = 32              # points per object, fewer when it shows fewer pixels in frame 0
_EVOLVING = ("perlin3d",)           # background kinds whose texture changes in time: motion undefined


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


def step_affines(to_frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-step maps of a surface placed in frame t by to_frame[t] (T, 2, 3), surface -> frame px.

    Returns (forward, backward), float64 (T-1, 2, 3): frame t px -> frame t+1 px, and back."""
    H = homogeneous(to_frame)
    inv = np.linalg.inv(H)
    forward = H[1:] @ inv[:-1]
    backward = H[:-1] @ inv[1:]
    return forward[:, :2], backward[:, :2]


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


def clip_motion(plan: ClipPlan) -> Motion:
    """The Motion of a plan as the rasteriser paints it (static recipes: every pose held at frame 0)."""
    T = plan.frames
    eye = np.broadcast_to(np.eye(2, 3), (T - 1, 2, 3))
    posed = [hold_pose(t, T) for t in plan.tracks] if plan.static else plan.tracks
    bg = plan.background
    still = plan.static or bg is None or bg.camera is None or np.allclose(bg.camera, bg.camera[:1])
    fwd, bwd = (eye, eye) if still else step_affines(np.linalg.inv(homogeneous(bg.camera))[:, :2])
    forward, backward = [fwd], [bwd]
    for track in posed:
        f, b = step_affines(sprite_matrices(track))
        forward.append(f)
        backward.append(b)
    valid = bg is not None and (plan.static or bg.kind not in _EVOLVING)
    return Motion(np.stack(forward), np.stack(backward), valid, bool(still))


def affine_flow(A: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
    """(dx, dy), float32 (y1-y0, x1-x0) each: A p - p over the pixels of the box [x0, x1) x [y0, y1)."""
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    a = A.astype(np.float32)
    dx = (a[0, 0] - 1) * xs + (a[0, 1] * ys + a[0, 2])
    dy = a[1, 0] * xs + ((a[1, 1] - 1) * ys + a[1, 2])
    return dx, dy


def landing_owner(labels_to: np.ndarray, x0: int, y0: int, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """uint8 (h, w): the owner at the nearest pixel of p + (dx, dy) in the next frame's label map
    labels_to (H, W); 255 (no owner) where that pixel is outside the frame."""
    H, W = labels_to.shape
    h, w = dx.shape
    qx = np.rint(dx + np.arange(x0, x0 + w, dtype=np.float32)[None, :]).astype(np.intp)
    qy = np.rint(dy + np.arange(y0, y0 + h, dtype=np.float32)[:, None]).astype(np.intp)
    inside = (qx >= 0) & (qx < W) & (qy >= 0) & (qy < H)
    owner = labels_to[np.clip(qy, 0, H - 1), np.clip(qx, 0, W - 1)]
    owner[~inside] = 255
    return owner


def fill_step(flow: np.ndarray, occluded: np.ndarray | None, labels_from: np.ndarray, labels_to: np.ndarray,
              affines: np.ndarray, boxes: np.ndarray, motion: Motion) -> None:
    """Fill one frame step in place: flow float32 (H, W, 2) (zeros on entry) and, if given, occluded bool
    (H, W), for the pixels of the frame whose owners labels_from (H, W) gives; labels_to (H, W) owns the
    frame the step goes to. affines: (K+1, 2, 3) this step's maps; boxes: (K, 4) x1 y1 x2 y2 of each
    object's pixels in labels_from (NaN: none)."""
    H, W = labels_from.shape
    if motion.background_valid:
        if not motion.background_still:
            dx, dy = affine_flow(affines[0], 0, 0, W, H)
            mine = labels_from == 0
            np.copyto(flow[..., 0], dx, where=mine)
            np.copyto(flow[..., 1], dy, where=mine)
            if occluded is not None:
                occluded |= mine & (landing_owner(labels_to, 0, 0, dx, dy) != 0)
        elif occluded is not None:   # still: p stays at p, covered where an object owns it next
            occluded |= (labels_from == 0) & (labels_to != 0)
    for k, box in enumerate(boxes):
        if np.isnan(box[0]):
            continue
        x0, y0, x1, y1 = (int(v) for v in box)
        mine = labels_from[y0:y1, x0:x1] == k + 1
        dx, dy = affine_flow(affines[k + 1], x0, y0, x1, y1)
        region = flow[y0:y1, x0:x1]
        np.copyto(region[..., 0], dx, where=mine)
        np.copyto(region[..., 1], dy, where=mine)
        if occluded is not None:
            occluded[y0:y1, x0:x1] |= mine & (landing_owner(labels_to, x0, y0, dx, dy) != k + 1)


def flow_fields(clip: Clip, labels: np.ndarray, motion: Motion) -> dict[str, np.ndarray]:
    """The four flow fields and occlusion of a painted clip (see smile_synth.clip.Clip), as Clip keywords.

    labels: uint8 (T, H, W), the owner of each pixel (0 background, k+1 object k)."""
    T, H, W = labels.shape
    flow = np.zeros((T - 1, H, W, 2), np.float32)
    flow_back = np.zeros((T - 1, H, W, 2), np.float32)
    occluded = np.zeros((T - 1, H, W), bool)
    boxes = clip.boxes
    for t in range(T - 1):
        fill_step(flow[t], occluded[t], labels[t], labels[t + 1], motion.forward[:, t], boxes[:, t], motion)
        fill_step(flow_back[t], None, labels[t + 1], labels[t], motion.backward[:, t], boxes[:, t + 1], motion)
    if motion.background_valid:
        valid = np.ones((T, H, W), bool)
    else:
        valid = labels != 0
    return dict(flow=flow, flow_back=flow_back, flow_valid=valid[:-1].copy(), flow_back_valid=valid[1:].copy(),
                occluded=occluded)


def tracks_rng(plan: ClipPlan) -> np.random.Generator:
    """The track points' own stream: the clip's draws (clip_rngs) stay as they are with or without tracks."""
    key = stable_hash(plan.recipe.draw_key + "/tracks")
    return np.random.default_rng(np.random.SeedSequence([key, int(plan.seed), int(plan.index)]))


def point_tracks(plan: ClipPlan, clip: Clip, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Up to TRACKS_PER_OBJECT points per object, drawn without replacement among the pixel centres it
    owns in frame 0, followed through its poses: x_t = M_t M_0^{-1} x_0. Returns Clip keywords:
    tracks float32 (N, T, 2) x, y px (object 0's points first), track_visible bool (N, T): the nearest
    pixel is in the frame and owned by the point's object."""
    T, H, W = labels.shape
    rng = tracks_rng(plan)
    posed = [hold_pose(t, T) for t in plan.tracks] if plan.static else plan.tracks
    tracks, owners = [np.zeros((0, T, 2))], [np.zeros(0, np.uint8)]
    for k, track in enumerate(posed):
        ys, xs = np.nonzero(clip.masks[k, 0])
        if len(xs) == 0:
            continue
        pick = rng.choice(len(xs), size=min(TRACKS_PER_OBJECT, len(xs)), replace=False)
        p0 = np.stack([xs[pick], ys[pick], np.ones(len(pick))]).astype(np.float64)   # (3, n)
        M = homogeneous(sprite_matrices(track))
        placed = (M @ np.linalg.inv(M[0]))[:, :2] @ p0   # (T, 2, n)
        tracks.append(placed.transpose(2, 0, 1))
        owners.append(np.full(len(pick), k + 1, np.uint8))
    xy = np.concatenate(tracks).astype(np.float32)
    owner = np.concatenate(owners)
    q = np.rint(xy).astype(np.intp)
    inside = (q[..., 0] >= 0) & (q[..., 0] < W) & (q[..., 1] >= 0) & (q[..., 1] < H)
    seen = labels[np.arange(T)[None, :], np.clip(q[..., 1], 0, H - 1), np.clip(q[..., 0], 0, W - 1)]
    return dict(tracks=xy, track_visible=inside & (seen == owner[:, None]))


def annotate(plan: ClipPlan, clip: Clip, annotations: str | tuple[str, ...] | list[str]) -> Clip:
    """The clip painted from `plan`, with the annotations named (see ANNOTATIONS) added; the same clip
    when none are named. Pixels, masks, boxes and meta are the clip's own."""
    names = check_annotations(annotations)
    if not names:
        return clip
    labels = masks_to_labels(clip.masks, clip.video.shape[:3])
    extra: dict[str, np.ndarray] = {}
    if "flow" in names:
        extra.update(flow_fields(clip, labels, clip_motion(plan)))
    if "tracks" in names:
        extra.update(point_tracks(plan, clip, labels))
    return replace(clip, **extra)
