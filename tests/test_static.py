"""motion.static: the objects and background of the moving clip of the same (recipe, seed, index),
held still at frame 0 (given frames of the overlay recipe still play); and adding the setting left
every default recipe's fingerprint and pixels exactly as they were."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from conftest import FRAMES, SIZE, assert_user_error, recipe, run_cli

from generators import get_recipe, overlay_clip, recipe_names, render_clip
from generators.recipes import Recipe
from smile_synth.config import build
from smile_synth.errors import UserError

STATIC = "motion.static=true"
INDICES = range(4)

# sha256 of get_recipe(name).key, recorded before motion.static existed: datasets are checked
# against these fingerprints, so they must never change.
KEY_SHA256 = {
    "black+objects": "fe7d99f9d4c579f7c568dd99920506a05f04def5dd07dd61f802ab9e4af32844",
    "noise+objects": "9a5b62a2cc73ed283beda2722cb3808ff0af45e29b3ff25d39e283945bb600a8",
    "image+objects": "6169eabd5fd099ddead6b6e6cfb42e3863a8ffa0b520274a44a4551db650dc7e",
    "fractal+objects": "880f81100fafa361783028b9a71cbbbed1ab14acb09d225cd3dc0fe8b411e180",
    "mixed": "ca8f604f0d44be2f3681ef1d26b99fca6840c3d2eef15126b2c7931a87282e50",
    "overlay": "0b2365f4b9c80f8af5653feded2923b7649bd8f288c54a59da891a35d1de2b96",
}
# sha256 over clips 0-3 of (recipe + background.bank_size=2, seed 5) at 4 frames x 64 px (overlay:
# the plain recipe on given_frames(0)), see pixels_digest, recorded before motion.static existed. They cover perlin, perlin3d, spectral,
# fractal, photo and gradient backgrounds, with and without camera motion. Pinned to this
# environment's numpy/OpenCV builds: a library upgrade that changes rounding changes them too.
PIXELS_SHA256 = {
    "black+objects": "ddfde3c86989c8b62d73fc54a4977db34d72b1993cfa137556f30647ae6d5ea4",
    "noise+objects": "fb26e2d700eeda12fb74300c1923c3d2aab6fc7ff61866344655664f2f62601d",
    "image+objects": "05e888f4977d616154fe4b5f1e8560abf8b0cddadf9ed3ca57963945a489d161",
    "fractal+objects": "d9d5161de99820c46e7234e66c24dd0757e4b4e5652dababc19082cfa8712e7e",
    "mixed": "e02dfcb22e8fd9881ae443acb53b1d7c807ec341db23f42af0eb97213afaf5e2",
    "overlay": "f1be57100a32a1fda5f1f189a547c9e9121ec2e8e9594a5bab243b2565b75fe9",
}


def given_frames(seed: int, T: int = FRAMES, size: int = SIZE) -> np.ndarray:
    """A 'natural video' for overlay: random uint8 (T, size, size, 3), every frame different."""
    return np.random.default_rng(seed).integers(0, 256, (T, size, size, 3), dtype=np.uint8)


def make_clip(r: Recipe, index: int, frames: np.ndarray | None = None, seed: int = 5):
    """Clip `index` of r: rendered, or overlaid on `frames` (default given_frames(0)) for `given` recipes."""
    if "given" in r.background.kinds:
        return overlay_clip(given_frames(0) if frames is None else frames, r, seed, index)
    return render_clip(r, seed, index, FRAMES, SIZE)


def pixels_digest(name: str) -> str:
    r = get_recipe(name, [] if name == "overlay" else ["background.bank_size=2"])  # overlay builds no banks
    h = hashlib.sha256()
    for index in INDICES:
        c = make_clip(r, index, frames=given_frames(0, 4, 64))
        part = hashlib.sha256()
        for a in (c.video, c.masks, c.boxes):
            part.update(np.ascontiguousarray(a).tobytes())
        part.update(json.dumps(c.meta, sort_keys=True).encode())
        h.update(part.hexdigest().encode())
    return h.hexdigest()


def assert_held(a: np.ndarray, axis: int) -> None:
    """Every slice of `a` along `axis` (frames) equals the first (NaN == NaN)."""
    first = np.take(a, [0], axis=axis)
    np.testing.assert_array_equal(a, np.broadcast_to(first, a.shape))


# ---- compatibility: moving recipes are exactly what they were --------------------------------

@pytest.mark.parametrize("name", list(KEY_SHA256))
def test_default_keys_are_unchanged(name):
    r = get_recipe(name)
    assert hashlib.sha256(r.key.encode()).hexdigest() == KEY_SHA256[name]
    assert "static" not in r.key and "static" not in r.to_dict()["motion"]
    assert r.draw_key == r.key


def test_every_recipe_has_a_pinned_key():
    assert sorted(recipe_names()) == sorted(KEY_SHA256)


@pytest.mark.parametrize("name", list(PIXELS_SHA256))
def test_default_pixels_are_unchanged(name):
    assert pixels_digest(name) == PIXELS_SHA256[name]


# ---- the setting ------------------------------------------------------------------------------

def test_static_parses_and_is_in_the_fingerprint():
    r = get_recipe("black+objects", [STATIC])
    assert r.motion.static is True
    moving = get_recipe("black+objects")
    assert r.key != moving.key and json.loads(r.key)["motion"]["static"] is True
    assert r.draw_key == moving.key  # the same random draws as the moving recipe
    assert get_recipe("black+objects", ["motion.static=false"]).key == moving.key


@pytest.mark.parametrize("overrides", [[], [STATIC]])
def test_recipe_round_trips_through_its_dict(overrides):
    """dataset.json stores recipe.to_dict(); building it back gives the same recipe and key."""
    r = get_recipe("mixed", overrides)
    back = build(Recipe, json.loads(json.dumps(r.to_dict())))
    assert back == r and back.key == r.key


def test_generate_spec_records_static_only_when_set(tmp_path):
    from smile_synth.app.generate import GenerateConfig

    def spec(r):
        return GenerateConfig(n=1, out=str(tmp_path), recipe=r).spec()["recipe"]["motion"]

    assert "static" not in spec(get_recipe("black+objects"))
    assert spec(get_recipe("black+objects", [STATIC]))["static"] is True


@pytest.mark.parametrize("value", ["maybe", "1", "[true]"])
def test_bad_static_value_is_a_one_line_user_error(value):
    with pytest.raises(UserError) as e:
        get_recipe("black+objects", [f"motion.static={value}"])
    msg = str(e.value)
    assert "\n" not in msg and "motion.static" in msg and "true or false" in msg


def test_cli_static_preview(tmp_path):
    png = tmp_path / "sheet.png"
    res = run_cli("preview", "--recipe", "black+objects", "--set", STATIC, "--out", png, "--n", 2,
                  "--frames", FRAMES, "--size", 32)
    assert res.exit_code == 0, res.output
    assert png.is_file()
    assert_user_error(run_cli("preview", "--recipe", "black+objects", "--set", "motion.static=maybe",
                              "--out", png, "--n", 1), "motion.static")


# ---- static clips -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", recipe_names())
def test_static_clip_is_frame_0_of_the_moving_clip_held(name):
    moving_r, static_r = recipe(name), recipe(name, STATIC)
    overlay = "given" in moving_r.background.kinds
    for index in INDICES:
        moving, static = make_clip(moving_r, index), make_clip(static_r, index)
        T = FRAMES
        assert static.video.shape == moving.video.shape and static.video.dtype == np.uint8
        assert static.masks.shape == moving.masks.shape and static.boxes.shape == moving.boxes.shape
        assert static.video.flags.writeable and static.masks.flags.writeable
        # the same objects and background ...
        assert static.meta == dict(moving.meta, static=True)
        # ... at frame 0 exactly as the moving clip shows them
        np.testing.assert_array_equal(static.video[0], moving.video[0])
        np.testing.assert_array_equal(static.masks[:, 0], moving.masks[:, 0])
        np.testing.assert_array_equal(static.boxes[:, 0], moving.boxes[:, 0])
        # ... and held there
        assert_held(static.masks, axis=1)
        assert_held(static.boxes, axis=1)
        if not overlay:
            assert_held(static.video, axis=0)
        else:  # the given frames play on; outside the objects' regions they are untouched
            assert not np.array_equal(static.video[0], static.video[1])
        # while the moving clip does move
        assert not (moving.masks == moving.masks[:, :1]).all(), f"clip {index}: objects do not move"
        assert not np.array_equal(moving.video[0], moving.video[T - 1])


@pytest.mark.parametrize("name", ["image+objects", "mixed", "noise+objects"])
def test_static_holds_a_moving_camera_and_evolving_noise(name):
    """Backgrounds alone (no objects), camera always on with shake: frame 0 of the moving clip
    (shake offset included: it is drawn over all T frames), then still."""
    extra = ["objects.count=[0, 0]", "background.camera.prob=1.0", "background.camera.shake=2.0"]
    moving_r, static_r = recipe(name, *extra), recipe(name, *extra, STATIC)
    for index in range(6):
        moving = render_clip(moving_r, 1, index, FRAMES, SIZE)
        static = render_clip(static_r, 1, index, FRAMES, SIZE)
        assert static.meta["background"] == moving.meta["background"]
        np.testing.assert_array_equal(static.video[0], moving.video[0])
        assert_held(static.video, axis=0)
        if moving.meta["background"] not in ("black", "solid"):
            assert not np.array_equal(moving.video[0], moving.video[-1]), moving.meta["background"]


def test_static_overlay_objects_keep_their_pixels_on_a_playing_video():
    """Opaque object pixels (the same over black and over white) are the same in every frame of a
    static overlay on a changing video; masks never depend on the frames."""
    r = recipe("overlay", STATIC)
    T, S = FRAMES, SIZE
    for index in INDICES:
        playing = given_frames(index + 10)
        clip = overlay_clip(playing, r, 5, index)
        black = overlay_clip(np.zeros((T, S, S, 3), np.uint8), r, 5, index)
        white = overlay_clip(np.full((T, S, S, 3), 255, np.uint8), r, 5, index)
        assert_held(black.video, axis=0)  # a still video stays still
        np.testing.assert_array_equal(clip.masks, black.masks)
        opaque = (black.video[0] == white.video[0]).all(axis=-1)  # (H, W)
        assert opaque.sum() > 0, "no opaque object pixels"
        assert not (opaque & ~clip.masks[:, 0].any(axis=0)).any()  # opaque pixels belong to an object
        for t in range(T):
            np.testing.assert_array_equal(clip.video[t][opaque], black.video[0][opaque])
        untouched = (black.video[0] == 0).all(axis=-1) & (white.video[0] == 255).all(axis=-1)
        np.testing.assert_array_equal(clip.video[:, untouched], playing[:, untouched])
