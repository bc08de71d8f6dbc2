"""Procedural synthetic clips for SMILE-style pretraining.

    >>> from generators import render_clip
    >>> clip = render_clip("black+objects", seed=0, index=7)   # video (16, 224, 224, 3) uint8
"""
import cv2 as _cv2

# One OpenCV thread per process: parallelism comes from processes (generate --workers, DataLoader
# workers), and a parent whose OpenCV thread pool has started deadlocks children it forks.
_cv2.setNumThreads(1)

from smile_synth.clip import Clip  # noqa: E402
from .recipes import Recipe, describe_recipes, get_recipe, recipe_names  # noqa: E402
from .flow import ANNOTATIONS, annotate, check_annotations  # noqa: E402
from .render import overlay_clip, prepare, render_clip  # noqa: E402

__all__ = ["Clip", "Recipe", "render_clip", "overlay_clip", "get_recipe", "prepare", "recipe_names", "describe_recipes",
           "ANNOTATIONS", "annotate", "check_annotations",
           "ClipStream", "render_batch", "overlay_batch"]


def __getattr__(name: str):
    if name == "ClipStream":  # imports torch; keep `import generators` light
        from .stream import ClipStream

        return ClipStream
    if name in ("render_batch", "overlay_batch"):  # the torch backend: imports torch too
        from . import torch_render

        return getattr(torch_render, name)
    raise AttributeError(name)
