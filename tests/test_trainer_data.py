"""Training batches: determinism per step (exact resume), worker/rank splits, and every source."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import recipe
from torch.utils.data import DataLoader

from smile_synth.errors import UserError
from smile_synth.shards import iter_clips
from smile_synth.video import VideoItem
from training.data import (
    MAX_ATTEMPTS,
    BadSample,
    BatchStream,
    MixedSource,
    NaturalSource,
    RenderSource,
    Sample,
    ShardSource,
    fit_clip,
)
from training.masking import object_token_coverage

FRAMES, SIZE = 4, 32


@pytest.fixture(scope="module")
def render_source():
    return RenderSource(recipe("black+objects"), FRAMES, SIZE, seed=7)


def n_items(source):
    """Items per epoch of a source (the attribute was renamed from `size` to `num_items`)."""
    return source.num_items if hasattr(source, "num_items") else source.size


def assert_same_batch(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] and a["bad"] == b["bad"] and a["error"] == b["error"]
    assert torch.equal(a["video"], b["video"])
    assert (a["coverage"] is None) == (b["coverage"] is None)
    if a["coverage"] is not None:
        assert torch.equal(a["coverage"], b["coverage"])


class Recording:
    """A source that returns sample g as a video filled with g (and records what was asked)."""
    num_items = size = None

    def __init__(self):
        self.asked: list[tuple[int, int]] = []

    def get(self, g: int, attempt: int) -> Sample:
        self.asked.append((g, attempt))
        return Sample(np.full((FRAMES, SIZE, SIZE, 3), g % 256, np.uint8), None)


# ---- BatchStream ------------------------------------------------------------------------------------

def test_batch_is_a_pure_function_of_step(render_source):
    stream = BatchStream(render_source, 3, tubelet=2, patch=16)
    a, b = stream.batch(2), BatchStream(render_source, 3, 2, 16).batch(2)
    assert a["video"].shape == (3, FRAMES, SIZE, SIZE, 3) and a["video"].dtype == torch.uint8
    assert a["coverage"].shape == (3, 2 * 2 * 2) and a["coverage"].dtype == torch.float32
    assert a["step"] == 2 and a["bad"] == 0 and a["error"] is None
    stream.batch(5)                                                     # other calls in between change nothing
    assert_same_batch(a, stream.batch(2))
    assert_same_batch(a, b)
    c = stream.batch(3)
    assert not torch.equal(a["video"], c["video"])
    # within a batch the clips differ
    assert not torch.equal(a["video"][0], a["video"][1])


def test_global_sample_indices_of_ranks_and_steps():
    """Batch `step` of rank r holds samples (step * world + r) * B + j: ranks and steps never overlap."""
    seen = []
    for rank in range(2):
        src = Recording()
        stream = BatchStream(src, 3, 2, 16, rank=rank, world_size=2)
        for step in range(4):
            batch = stream.batch(step)
            gs = sorted(batch["video"][:, 0, 0, 0, 0].tolist())
            assert gs == list(range((step * 2 + rank) * 3, (step * 2 + rank) * 3 + 3))
        seen += [g for g, _ in src.asked]
    assert sorted(seen) == list(range(4 * 2 * 3))


def test_ranks_get_different_clips(render_source):
    r0 = BatchStream(render_source, 2, 2, 16, rank=0, world_size=2).batch(1)
    r1 = BatchStream(render_source, 2, 2, 16, rank=1, world_size=2).batch(1)
    single = BatchStream(render_source, 2, 2, 16).batch(1)
    assert not torch.equal(r0["video"], r1["video"])
    for i in range(2):
        for j in range(2):
            assert not torch.equal(r0["video"][i], r1["video"][j])
    assert not torch.equal(r0["video"], single["video"])


@pytest.mark.parametrize("start", [0, 3])
def test_dataloader_workers_yield_the_in_process_batches_in_order(render_source, start):
    stream = BatchStream(render_source, 2, 2, 16, start_step=start)
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    got = []
    for batch in loader:
        got.append(batch)
        if len(got) == 5:
            break
    del loader
    assert [b["step"] for b in got] == list(range(start, start + 5))
    reference = BatchStream(render_source, 2, 2, 16)
    for b in got:
        assert_same_batch(b, reference.batch(b["step"]))


def test_iterating_in_process_matches_batch():
    src = Recording()
    it = iter(BatchStream(src, 2, 2, 16, start_step=4))
    steps = [next(it)["step"] for _ in range(3)]
    assert steps == [4, 5, 6]


# ---- shard source ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shard_clips(training_shards):
    return list(iter_clips(training_shards))


def find_clip(video: np.ndarray, clips) -> int:
    hits = [i for i, c in enumerate(clips) if c.video.shape == video.shape and np.array_equal(c.video, video)]
    assert len(hits) == 1, hits
    return hits[0]


def test_shard_source_returns_every_clip_once_per_epoch(training_shards, shard_clips):
    src = ShardSource(training_shards, frames=8, size=64, seed=0)
    assert n_items(src) == len(shard_clips) == 12
    for epoch in range(2):
        found = [find_clip(src.get(epoch * 12 + j, 0).video, shard_clips) for j in range(12)]
        assert sorted(found) == list(range(12)), epoch
    # another seed, another order
    other = ShardSource(training_shards, frames=8, size=64, seed=1)
    assert [find_clip(other.get(j, 0).video, shard_clips) for j in range(12)] != \
           [find_clip(src.get(j, 0).video, shard_clips) for j in range(12)]


def test_shard_source_coverage_matches_the_clip_masks(training_shards, shard_clips):
    src = ShardSource(training_shards, frames=8, size=64, seed=0)
    batch = BatchStream(src, 4, tubelet=2, patch=16).batch(1)
    assert batch["video"].shape == (4, 8, 64, 64, 3)
    assert batch["coverage"].shape == (4, 4 * 4 * 4)
    for j in range(4):
        clip = shard_clips[find_clip(batch["video"][j].numpy(), shard_clips)]
        objects = torch.from_numpy(clip.masks.any(axis=0))[None]
        assert torch.allclose(batch["coverage"][j], object_token_coverage(objects, 2, 16)[0])
    assert (batch["coverage"] > 0).any()          # black+objects clips carry objects


def test_shard_source_window_and_resize(training_shards, shard_clips):
    src = ShardSource(training_shards, frames=4, size=64, seed=0)
    s = src.get(5, 0)
    assert s.video.shape == (4, 64, 64, 3) and s.objects.shape == (4, 64, 64) and s.objects.dtype == bool
    # a window of 4 consecutive frames of one stored clip, with its masks
    matches = [(i, t0) for i, c in enumerate(shard_clips) for t0 in range(5)
               if np.array_equal(c.video[t0:t0 + 4], s.video)]
    assert len(matches) == 1
    i, t0 = matches[0]
    assert np.array_equal(shard_clips[i].masks.any(axis=0)[t0:t0 + 4], s.objects)
    small = ShardSource(training_shards, frames=FRAMES, size=SIZE, seed=0).get(5, 0)
    assert small.video.shape == (FRAMES, SIZE, SIZE, 3) and small.video.dtype == np.uint8
    assert small.objects.shape == (FRAMES, SIZE, SIZE) and small.objects.dtype == bool


def test_shard_source_with_too_few_frames_is_a_user_error(training_shards):
    with pytest.raises(UserError, match="8 frames"):
        ShardSource(training_shards, frames=16, size=64)


def test_shard_source_bad_folders(tmp_path):
    with pytest.raises(UserError, match="no such shard folder"):
        ShardSource(tmp_path / "nowhere", 4, 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no shard"):
        ShardSource(tmp_path / "empty", 4, 32)


# ---- fit_clip ----------------------------------------------------------------------------------------

def test_fit_clip_window_and_resize():
    T, H, W = 10, 48, 80
    video = np.repeat(np.arange(T, dtype=np.uint8)[:, None, None, None] * 20, H * W * 3).reshape(T, H, W, 3)
    objects = np.zeros((T, H, W), bool)
    objects[:, :24] = True                                               # top half
    starts = set()
    for seed in range(30):
        s = fit_clip(video, objects, 4, 32, np.random.default_rng(seed))
        assert s.video.shape == (4, 32, 32, 3) and s.video.dtype == np.uint8 and s.video.flags.c_contiguous
        assert s.objects.shape == (4, 32, 32) and s.objects.dtype == bool
        t0 = int(s.video[0, 0, 0, 0]) // 20
        assert [int(f[0, 0, 0]) for f in s.video] == [20 * (t0 + i) for i in range(4)]
        assert (s.video == s.video[:, :1, :1]).all()                      # constant frames stay constant
        assert s.objects[:, :16].all() and not s.objects[:, 16:].any()    # top half stays top half
        starts.add(t0)
    assert starts == set(range(7))                                      # every window start occurs


def test_fit_clip_same_size_is_a_slice_and_too_short_is_bad():
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    s = fit_clip(video, None, 6, 32, rng)
    assert s.objects is None and np.array_equal(s.video, video)
    with pytest.raises(BadSample, match="5 frames"):
        fit_clip(video[:5], None, 6, 32, rng)


# ---- mixed source --------------------------------------------------------------------------------------

class Constant:
    def __init__(self, value: int, items=None):
        self.value, self.num_items, self.size = value, items, items

    def get(self, g: int, attempt: int) -> Sample:
        return Sample(np.full((2, 16, 16, 3), self.value, np.uint8), None)


@pytest.mark.parametrize("ratio", [0.25, 0.7])
def test_mixed_source_ratio(ratio):
    mixed = MixedSource(Constant(1), Constant(2), ratio, seed=3)
    picks = [mixed.get(g, 0).video[0, 0, 0, 0] == 1 for g in range(400)]
    share = sum(picks) / 400
    assert abs(share - ratio) < 0.08, share
    # a pure function of g
    assert picks == [mixed.get(g, 0).video[0, 0, 0, 0] == 1 for g in range(400)]


def test_mixed_source_extremes_and_size():
    assert all(MixedSource(Constant(1), Constant(2), 0.0).get(g, 0).video[0, 0, 0, 0] == 2 for g in range(50))
    assert all(MixedSource(Constant(1), Constant(2), 1.0).get(g, 0).video[0, 0, 0, 0] == 1 for g in range(50))
    assert n_items(MixedSource(Constant(1, 10), Constant(2, 5), 0.5)) == 15
    assert n_items(MixedSource(Constant(1, None), Constant(2, 5), 0.5)) is None


# ---- natural source -------------------------------------------------------------------------------------

class Counting:
    """Wraps a source and counts the BadSample exceptions it raises."""

    def __init__(self, source):
        self.source, self.bad = source, 0
        self.num_items = self.size = n_items(source)

    def get(self, g, attempt):
        try:
            return self.source.get(g, attempt)
        except BadSample:
            self.bad += 1
            raise


def test_natural_source_skips_and_counts_bad_videos(test_videos, bad_videos):
    items = [VideoItem(p) for p in [*test_videos, *bad_videos]]
    src = Counting(NaturalSource(items, FRAMES, SIZE, rate=2, seed=0))
    stream = BatchStream(src, 4, 2, 16)
    total_bad = 0
    for step in range(4):
        before = src.bad
        batch = stream.batch(step)
        assert batch["error"] is None
        assert batch["video"].shape == (4, FRAMES, SIZE, SIZE, 3)
        assert batch["coverage"] is None                           # no overlay: no objects
        assert batch["bad"] == src.bad - before
        total_bad += batch["bad"]
    assert total_bad > 0                                            # half the list is bad


def test_natural_source_with_overlay_has_coverage(test_videos):
    items = [VideoItem(p) for p in test_videos]
    src = NaturalSource(items, FRAMES, SIZE, rate=2, overlay=recipe("overlay"), seed=0)
    batch = BatchStream(src, 2, 2, 16).batch(0)
    assert batch["coverage"].shape == (2, 8)
    assert (batch["coverage"] > 0).any()


def test_all_bad_videos_give_a_batch_error(bad_videos):
    src = NaturalSource([VideoItem(p) for p in bad_videos], FRAMES, SIZE, rate=2)
    batch = BatchStream(src, 2, 2, 16).batch(0)
    assert batch["video"] is None
    assert isinstance(batch["error"], str) and "bad" in batch["error"]
    assert any(p.name in batch["error"] for p in bad_videos)         # names the last bad sample
    assert batch["bad"] == MAX_ATTEMPTS                              # the first sample failed every attempt


class _FlakySource:
    """Good 8x32x32 clips, except that sample 3 raises an unexpected (non-BadSample) error once."""
    num_items = None

    def get(self, g, attempt):
        from training.data import Sample
        if g == 3 and attempt == 0:
            raise ZeroDivisionError("generator bug")
        return Sample(np.full((4, 32, 32, 3), g, np.uint8), None)


def test_an_unexpected_error_in_one_sample_is_skipped_and_counted():
    from training.data import BatchStream
    batch = BatchStream(_FlakySource(), batch_size=4, tubelet=2, patch=16).batch(0)
    assert batch["error"] is None and batch["bad"] == 1
    assert batch["video"].shape == (4, 4, 32, 32, 3)
    assert [int(v[0, 0, 0, 0]) for v in batch["video"]] == [0, 1, 2, 3]   # sample 3 came from its retry
