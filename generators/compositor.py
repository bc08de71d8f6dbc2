"""Compositor: pastes object sprites onto a background video, back to front, and returns each
object's visible pixel mask after occlusion.

A pixel belongs to object k when k contributes more than half of its final colour:
w_k = a_k * prod_{j in front of k} (1 - a_j) > 1/2, with the alphas a (multiples of 1/255) the
blend uses; shares are tracked in float32, and only in frames where objects overlap. The shares
of one pixel sum to at most 1, so masks are disjoint. Only the bounding box of each warped
sprite is touched, and every per-pixel step is one OpenCV or numpy call.
"""
from __future__ import annotations

import cv2
import numpy as np

from .objects import ObjectTrack

_INV255 = 1.0 / 255.0


def sprite_matrices(track: ObjectTrack) -> np.ndarray:
    """Forward affines (T, 2, 3): sprite pixel -> frame pixel.

    frame = centre + R(angle) @ Shear(shear) @ S(scale) @ (p - sprite_centre); y points down,
    so a positive angle turns counter-clockwise on screen."""
    h, w = track.sprite.shape[:2]
    a = np.radians(track.angle)
    c, s, k = np.cos(a) * track.scale, np.sin(a) * track.scale, track.shear
    M = np.empty((len(a), 2, 3))
    M[:, 0, 0], M[:, 0, 1] = c, c * k + s
    M[:, 1, 0], M[:, 1, 1] = -s, -s * k + c
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    M[:, :, 2] = track.centres - np.einsum("tij,j->ti", M[:, :, :2], centre)
    return M


def sprite_boxes(M: np.ndarray, h: int, w: int, H: int, W: int) -> np.ndarray:
    """int (T, 4) x0 y0 x1 y1 frame region each warped sprite can touch, clipped to the frame."""
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64).T  # (3, 4)
    pts = M @ corners  # (T, 2, 4)
    lo = np.floor(pts.min(axis=2)).astype(int) - 1
    hi = np.ceil(pts.max(axis=2)).astype(int) + 2
    return np.stack([np.maximum(lo[:, 0], 0), np.maximum(lo[:, 1], 0),
                     np.minimum(hi[:, 0], W), np.minimum(hi[:, 1], H)], axis=1)


def premultiply(sprite: np.ndarray) -> np.ndarray:
    """RGBA with colour multiplied by alpha, so bilinear warps do not bleed hidden colour into edges."""
    rgb = cv2.multiply(cv2.cvtColor(sprite, cv2.COLOR_RGBA2RGB), cv2.cvtColor(sprite[..., 3].copy(), cv2.COLOR_GRAY2RGB), scale=_INV255)
    return np.dstack([rgb, sprite[..., 3]])


def composite(video: np.ndarray, tracks: list[ObjectTrack]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw `tracks` (back to front) onto `video` in place.

    video: uint8 (T, H, W, 3). Returns (video, masks bool (K, T, H, W), boxes float32 (K, T, 4)).
    """
    T, H, W = video.shape[:3]
    K = len(tracks)
    masks = np.zeros((K, T, H, W), bool)
    weight = np.zeros((H, W), np.float32)  # current owner's share of each pixel's colour
    found: list[tuple[int, int, int, int, int, int]] = []  # k, t, x1, y1, x2, y2
    plans = []
    for tr in tracks:
        M = sprite_matrices(tr)
        rois = sprite_boxes(M, *tr.sprite.shape[:2], H, W)
        M[:, 0, 2] -= rois[:, 0]  # warp straight into the region's own coordinates
        M[:, 1, 2] -= rois[:, 1]
        plans.append((M, rois.tolist(), premultiply(tr.sprite), tr.opacity.tolist()))
    for t in range(T):
        frame = video[t]
        drawn: list[tuple] = []  # k, x0, y0, x1, y1, its alpha
        shared = False  # has any region overlapped an earlier one in this frame?
        for k in range(K):
            M, rois, sprite, opacity = plans[k]
            x0, y0, x1, y1 = rois[t]
            op = opacity[t]
            if x1 <= x0 or y1 <= y0 or op <= 0:
                continue  # off screen or invisible
            rgba = cv2.warpAffine(sprite, M[t], (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)
            if op < 1.0:
                rgba = cv2.convertScaleAbs(rgba, alpha=op)
            a = cv2.extractChannel(rgba, 3)
            roi = frame[y0:y1, x0:x1]
            bg = cv2.multiply(roi, cv2.cvtColor(cv2.bitwise_not(a), cv2.COLOR_GRAY2RGB), scale=_INV255)
            cv2.add(cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB), bg, dst=roi)
            own = np.greater(a, 127, out=masks[k, t, y0:y1, x0:x1])  # k takes the pixels where a > 1/2
            hits = [d for d in drawn if x0 < d[3] and d[1] < x1 and y0 < d[4] and d[2] < y1]
            if hits and not shared:  # first overlap in this frame: start tracking shares
                shared = True
                for _, bx0, by0, bx1, by1, ba in drawn:
                    np.multiply(ba, np.float32(_INV255), out=weight[by0:by1, bx0:bx1], dtype=np.float32)
            if shared:  # alone, an object's share is its alpha and needs no bookkeeping
                w = weight[y0:y1, x0:x1]  # stale values elsewhere are harmless: only owned pixels are read
                af = np.multiply(a, np.float32(_INV255), dtype=np.float32)
                if hits:  # w <- max(w * (1 - a), a if a > 1/2 else 0), i.e. a where k takes over
                    cv2.max(cv2.multiply(w, 1.0 - af), cv2.threshold(af, 0.5, 1.0, cv2.THRESH_TOZERO)[1], dst=w)
                else:
                    w[...] = af
                for j, bx0, by0, bx1, by1, _ in hits:  # what k took, earlier owners lose
                    ix0, iy0, ix1, iy1 = max(x0, bx0), max(y0, by0), min(x1, bx1), min(y1, by1)
                    mj = masks[j, t, iy0:iy1, ix0:ix1]
                    np.greater(mj, own[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0], out=mj)  # mj and not own
            drawn.append((k, x0, y0, x1, y1, a))
        if shared:  # owners whose share fell to 1/2 or less lose the pixel
            for k, x0, y0, x1, y1, _ in drawn:
                mk = masks[k, t, y0:y1, x0:x1]
                np.logical_and(mk, weight[y0:y1, x0:x1] > 0.5, out=mk)
        for k, x0, y0, x1, y1, _ in drawn:
            bx, by, bw, bh = cv2.boundingRect(masks[k, t, y0:y1, x0:x1].view(np.uint8))
            if bw:
                found.append((k, t, x0 + bx, y0 + by, x0 + bx + bw, y0 + by + bh))
    boxes = np.full((K, T, 4), np.nan, np.float32)
    if found:
        f = np.array(found)
        boxes[f[:, 0], f[:, 1]] = f[:, 2:]
    return video, masks, boxes
