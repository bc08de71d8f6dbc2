"""Small documented behaviours, one section per module: each test is here because a small bug planted in
that module passed every other test (issue 24, item 7: a mutation hunt in the least-tested modules)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_python

from smile_synth.atomic import TMP, remove_stale_temporaries
from smile_synth.errors import UserError
from smile_synth.video import read_video_list

from eval.features import embed, spatial_crops
from eval.tasks import task_examples, window_starts
from generators.resources import LazyFiles
from training.data import epoch_item
from training.natural import multi_scale_crop


# ---- smile_synth/atomic.py -----------------------------------------------------------------------------------

def dead_pid() -> int:
    """The pid of a process that has exited."""
    return int(run_python("import os; print(os.getpid())").stdout)


def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    """`replacing` writes .NAME.tmpPID; a run that starts removes those whose writer is gone, and must leave a
    live writer's (another process still writing into the folder) alone."""
    gone = dead_pid()
    stale = tmp_path / f".checkpoint.pt{TMP}{gone}"
    live = tmp_path / f".log.jsonl{TMP}{os.getpid()}"
    odd = tmp_path / f".notes.txt{TMP}abc"                # not a pid: not ours to judge
    other = tmp_path / f"checkpoint.pt{TMP}{gone}"     # no leading dot: not a `replacing` temporary
    for p in (stale, live, odd, other):
        p.write_bytes(b"partial")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and odd.exists() and other.exists()


def test_stale_temporaries_outside_the_pattern_are_kept(tmp_path):
    gone = dead_pid()
    mine, theirs = tmp_path / f".a.pt{TMP}{gone}", tmp_path / f".b.json{TMP}{gone}"
    for p in (mine, theirs):
        p.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path, "*.pt") == [mine]
    assert theirs.exists()


# ---- eval/tasks.py ---------------------------------------------------------------------------------------------

def test_windows_spread_evenly_and_a_single_window_is_centred():
    assert window_starts(20, 8, 3).tolist() == [0, 6, 12]
    assert window_starts(21, 8, 1).tolist() == [6]          # [6, 14) of [0, 21): the middle
    assert window_starts(7, 8, 1).tolist() == []            # shorter than one window
    (one,) = task_examples("labels", 0, 40, 3, 8, 2, 1, 1)    # one clip: VideoMAE's centre clip
    (clip,) = one.clips
    assert abs((clip[0] + clip[-1]) / 2 - 39 / 2) <= 0.5
    assert np.array_equal(np.diff(clip), np.full(7, 2))


# ---- smile_synth/video/lists.py --------------------------------------------------------------------------------

def test_a_quoted_csv_path_is_read_without_its_quotes(tmp_path):
    for name in ("my clip.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "list.csv").write_text('"my clip.mp4",2\n\'b.mp4\' 5\n')
    items = read_video_list(tmp_path / "list.csv")
    assert [(i.path, i.label) for i in items] == [(tmp_path / "my clip.mp4", 2), (tmp_path / "b.mp4", 5)]


# ---- training/natural.py ---------------------------------------------------------------------------------------

def test_a_crop_side_within_2_px_of_the_size_snaps_to_it_and_is_not_resized():
    """VideoMAE's multi-scale crop: 114 px frames, size 112, scale 1: the crop is 112 px, cut as it is."""
    frames = np.random.default_rng(0).integers(0, 256, (2, 114, 114, 3), dtype=np.uint8)
    for seed in range(5):
        out = multi_scale_crop(frames, 112, np.random.default_rng(seed), scales=(1.0,), max_distort=0)
        assert any(np.array_equal(out, frames[:, y:y + 112, x:x + 112]) for y in range(3) for x in range(3))


# ---- generators/resources.py -----------------------------------------------------------------------------------

class Numbers(LazyFiles):
    """Files 0..n-1 whose 'decoding' returns their index; the indices in `bad` fail to decode."""

    def __init__(self, n: int, bad=(), cache_items: int = 2):
        super().__init__([Path("/nowhere") / f"f{i}" for i in range(n)], cache_items)
        self.bad, self.loads = set(bad), []

    def _load(self, k: int) -> int:
        self.loads.append(k)
        if k in self.bad:
            raise ValueError("undecodable")
        return k


def test_lazy_files_give_item_i_and_skip_a_bad_file_to_the_next_good_one():
    files = Numbers(5, bad={1, 2})
    assert files.get(0) == 0 and files.get(4) == 4
    with pytest.warns(UserWarning, match="undecodable"):
        assert files.get(1) == 3                    # the next decodable file, deterministically
    assert files.get(2) == 3
    with pytest.raises(UserError, match="could be decoded"), pytest.warns(UserWarning):
        Numbers(3, bad={0, 1, 2}).get(1)


def test_lazy_files_keep_a_bounded_least_recently_used_cache():
    files = Numbers(4, cache_items=2)
    for i in (0, 1, 0, 2):                          # 1 is the least recently used when 2 arrives
        files.get(i)
    assert len(files._cache) == 2
    files.get(0)
    assert files.loads == [0, 1, 2]                 # 0 was still cached
    files.get(1)
    assert files.loads == [0, 1, 2, 1]              # 1 had been evicted


# ---- eval/features.py ------------------------------------------------------------------------------------------

def test_spatial_crops_take_the_centre_alone_and_the_ends_and_centre_for_three():
    frames = np.random.default_rng(1).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)   # already short side 32
    (one,) = spatial_crops(frames, 32, 1)
    assert np.array_equal(one, frames[:, :, 8:40])
    left, centre, right = spatial_crops(frames, 32, 3)
    assert np.array_equal(left, frames[:, :, :32]) and np.array_equal(centre, frames[:, :, 8:40])
    assert np.array_equal(right, frames[:, :, 16:])


class ChannelMeans(torch.nn.Module):
    """A stand-in encoder: (B, 3, T, H, W) -> tokens (B, 4, 3), token k = (k + 1) x each channel's mean."""

    def forward(self, video):
        means = video.mean((2, 3, 4))                                  # (B, 3)
        return torch.stack([means * (k + 1) for k in range(4)], 1)


def test_embed_is_the_mean_over_tokens_of_the_normalized_video():
    colour = np.array([10, 128, 250], np.uint8)
    views = np.broadcast_to(colour, (2, 2, 16, 16, 3)).copy()           # (B, T, H, W, 3)
    got = embed(ChannelMeans(), views)
    unit = (colour / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])   # ImageNet stats
    np.testing.assert_allclose(got, np.broadcast_to(unit * 2.5, (2, 3)), rtol=1e-5)   # mean of 1..4 = 2.5
    assert got.dtype == np.float32


# ---- training/data.py ------------------------------------------------------------------------------------------

def test_each_epoch_visits_every_item_once_in_a_fresh_order():
    n = 40
    epochs = [[epoch_item(0, g, n) for g in range(e * n, (e + 1) * n)] for e in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(n))
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]
    assert all(epoch_item(0, g, n, attempt=1) != epoch_item(0, g, n) for g in range(n))   # a retry takes another
