"""Per-clip random streams: clip i is a pure function of (recipe, seed, i)."""
from __future__ import annotations

import hashlib

import numpy as np


def stable_hash(text: str) -> int:
    """64-bit hash that is the same in every process and Python version (unlike hash())."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def clip_rngs(recipe_key: str, seed: int, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(background, objects) generators for clip `index`; recipe_key is the recipe's fingerprint.

    Two independent streams, so a clip's objects do not change with its background kind."""
    ss = np.random.SeedSequence([stable_hash(recipe_key), int(seed), int(index)])
    bg, obj = ss.spawn(2)
    return np.random.default_rng(bg), np.random.default_rng(obj)


def bank_rng(recipe_key: str, seed: int, name: str) -> np.random.Generator:
    """Generator for shared per-run resources (texture banks), independent of any clip index."""
    return np.random.default_rng(np.random.SeedSequence([stable_hash(recipe_key + "/" + name), int(seed)]))
