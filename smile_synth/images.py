"""Still-image I/O for photos and cut-outs: any common format, grayscale, RGBA, 16-bit."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm"}


def list_images(folder: str | Path, what: str = "image") -> list[Path]:
    """Sorted image files under `folder` (recursive). Raises UserError if missing or empty."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UserError(f"{what} folder {root} does not exist; pass an existing folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"{what} folder {root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); add some or pick another folder")
    return files


def check_image(path: Path, need_alpha: bool = False) -> bool:
    """Cheap header check. Returns whether the image has an alpha channel; UserError if unreadable."""
    try:
        with Image.open(path) as im:
            im.verify()
            mode, info = im.mode, im.info
    except Exception as e:  # PIL raises many types for broken files
        raise UserError(f"corrupt or unreadable image {path} ({type(e).__name__}); remove or replace it") from None
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in info)
    return has_alpha


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    img = img.astype(np.float32)
    hi = float(img.max()) if img.size else 1.0
    scale = 255.0 if hi <= 1.0 else 255.0 / hi
    return np.clip(img * scale, 0, 255).astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Decode to uint8 (H, W, 3) RGB or (H, W, 4) RGBA. Raises ValueError if undecodable."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:  # formats OpenCV lacks (gif, some tiffs): fall back to PIL
        try:
            with Image.open(path) as im:
                im = im.convert("RGBA" if ("A" in im.mode or "transparency" in im.info) else "RGB")
                return np.asarray(im).copy()
        except Exception as e:
            raise ValueError(f"cannot decode {path}: {e}") from None
    img = _to_uint8(img)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    if img.shape[2] == 2:  # gray + alpha
        g, a = img[..., 0], img[..., 1]
        return np.dstack([g, g, g, a])
    return cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)


def read_rgb(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """uint8 (H, W, 3); alpha, if any, is composited over black; optionally downscaled."""
    img = read_image(path)
    if img.shape[2] == 4:
        a = img[..., 3:].astype(np.float32) / 255.0
        img = (img[..., :3] * a).astype(np.uint8)
    if max_side and max(img.shape[:2]) > max_side:
        f = max_side / max(img.shape[:2])
        img = cv2.resize(img, (max(1, round(img.shape[1] * f)), max(1, round(img.shape[0] * f))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img)
