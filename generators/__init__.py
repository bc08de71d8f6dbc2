"""Procedural synthetic clips for SMILE-style pretraining.

    >>> from generators import render_clip
    >>> clip = render_clip("black+objects", seed=0, index=7)   # video (16, 224, 224, 3) uint8
"""
from .clip import Clip
from .recipes import Recipe, describe_recipes, get_recipe, recipe_names
from .render import overlay_clip, prepare, render_clip

__all__ = ["Clip", "Recipe", "render_clip", "overlay_clip", "get_recipe", "prepare", "recipe_names", "describe_recipes", "ClipStream"]


def __getattr__(name: str):
    if name == "ClipStream":  # imports torch; keep `import generators` light
        from .stream import ClipStream

        return ClipStream
    raise AttributeError(name)
