"""render_clip is a pure function of (recipe, seed, index, frames, size): in one process, in a fresh
process, streamed through DataLoader workers and written by `smile-synth generate` with any number
of workers."""
from __future__ import annotations

import hashlib
import json
import textwrap

import numpy as np
import pytest
from conftest import (
    CHEAP,
    FRAMES,
    RENDER_RECIPES,
    SIZE,
    clip_digest,
    read_samples,
    recipe,
    run_module,
    run_python,
)

from generators import render_clip
from smile_synth.shards import decode_sample, sample_key


def assert_same_clip(a, b):
    np.testing.assert_array_equal(a.video, b.video)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.boxes, b.boxes)  # NaN == NaN here
    assert a.video.dtype == b.video.dtype == np.uint8
    assert a.meta == b.meta


@pytest.mark.parametrize("name", RENDER_RECIPES)
def test_same_arguments_give_identical_clips(name):
    r = recipe(name)
    for index in (0, 3):
        first = render_clip(r, 11, index, FRAMES, SIZE)
        second = render_clip(r, 11, index, FRAMES, SIZE)
        assert_same_clip(first, second)
        assert first.video is not second.video


def test_recipe_name_and_recipe_object_give_the_same_clip():
    from generators import get_recipe

    assert_same_clip(render_clip("black+objects", 2, 5, FRAMES, SIZE),
                     render_clip(get_recipe("black+objects"), 2, 5, FRAMES, SIZE))


def test_render_order_does_not_matter():
    r = recipe("mixed")
    forward = {i: render_clip(r, 4, i, FRAMES, SIZE) for i in range(6)}
    for i in reversed(range(6)):
        assert_same_clip(render_clip(r, 4, i, FRAMES, SIZE), forward[i])


def test_fresh_process_gives_identical_clips():
    cases = [(name, seed, index) for name in RENDER_RECIPES for seed, index in ((0, 0), (7, 5))]
    code = textwrap.dedent(f"""
        import hashlib, json, numpy as np
        from generators import get_recipe, render_clip
        h = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
        out = []
        for name, seed, index in reversed({cases!r}):   # another order than the test's
            c = render_clip(get_recipe(name, {CHEAP!r}), seed, index, {FRAMES}, {SIZE})
            out.append(dict(video=h(c.video), masks=h(c.masks), boxes=h(c.boxes),
                            shapes=repr((c.video.shape, c.video.dtype.str, c.masks.shape, c.boxes.shape)),
                            meta=json.dumps(c.meta, sort_keys=True)))
        print(json.dumps(out[::-1]))
    """)
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = [clip_digest(render_clip(recipe(n), s, i, FRAMES, SIZE)) for n, s, i in cases]
    assert theirs == ours


@pytest.mark.parametrize("name", RENDER_RECIPES)
def test_other_seed_gives_other_video(name):
    r = recipe(name)
    a = render_clip(r, 0, 2, FRAMES, SIZE)
    b = render_clip(r, 1, 2, FRAMES, SIZE)
    assert not np.array_equal(a.video, b.video)


@pytest.mark.parametrize("name", RENDER_RECIPES)
def test_other_index_gives_other_video(name):
    r = recipe(name)
    videos = [render_clip(r, 0, i, FRAMES, SIZE).video.tobytes() for i in range(4)]
    assert len(set(videos)) == 4


def test_overrides_do_not_change_the_named_recipe():
    from generators import get_recipe

    before = {name: get_recipe(name) for name in ("image+objects", "mixed")}
    get_recipe("image+objects", ["background.photo_dir=/somewhere/else", "background.camera.shake=3"])
    get_recipe("mixed", ["objects.count=[5, 6]"])
    assert get_recipe("mixed") == before["mixed"]
    assert get_recipe("image+objects") == before["image+objects"]


def test_recipe_override_gives_other_clips():
    a = render_clip(recipe("black+objects"), 0, 1, FRAMES, SIZE)
    b = render_clip(recipe("black+objects", "objects.size=[20, 40]"), 0, 1, FRAMES, SIZE)
    assert not np.array_equal(a.video, b.video)


# ---- ClipStream -----------------------------------------------------------------------------

def video_hash(clip) -> tuple[int, str]:
    """DataLoader transform: (index, hash of the video bytes)."""
    return clip.meta["index"], hashlib.sha256(clip.video.tobytes()).hexdigest()


def expected_hashes(r, seed, indices, frames=FRAMES, size=32):
    return {i: hashlib.sha256(render_clip(r, seed, i, frames, size).video.tobytes()).hexdigest() for i in indices}


def test_stream_in_main_process_matches_render_clip():
    from torch.utils.data import DataLoader

    from generators import ClipStream

    r = recipe("mixed")
    ds = ClipStream(r, seed=3, frames=FRAMES, size=32, start=2, length=7, transform=video_hash)
    got = [(int(i), h) for i, h in DataLoader(ds, batch_size=None, num_workers=0)]
    indices = [i for i, _ in got]
    assert sorted(indices) == list(range(2, 9))  # every index exactly once
    assert dict(got) == expected_hashes(r, 3, range(2, 9))


def test_stream_with_two_workers_matches_render_clip():
    # A fresh interpreter: the DataLoader forks workers from a process that has not rendered yet.
    code = textwrap.dedent(f"""
        import hashlib, json
        from torch.utils.data import DataLoader
        from generators import ClipStream, get_recipe
        def tf(clip):
            return clip.meta["index"], hashlib.sha256(clip.video.tobytes()).hexdigest()
        r = get_recipe("mixed", {CHEAP!r})
        out = {{}}
        for workers in (2, 0):
            ds = ClipStream(r, seed=3, frames={FRAMES}, size=32, start=2, length=7, transform=tf)
            out[workers] = [[int(i), h] for i, h in DataLoader(ds, batch_size=None, num_workers=workers, timeout=120 if workers else 0)]
        print(json.dumps(out))
    """)
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    want = expected_hashes(recipe("mixed"), 3, range(2, 9))
    for workers, got in out.items():
        indices = [i for i, _ in got]
        assert sorted(indices) == list(range(2, 9)), f"num_workers={workers}: {indices}"
        assert {i: h for i, h in got} == want, f"num_workers={workers}"


def test_stream_ranks_split_indices_exactly_once():
    from generators import ClipStream

    r = recipe("black+objects")
    seen = []
    for rank in range(3):
        ds = ClipStream(r, seed=1, frames=FRAMES, size=32, start=5, length=10, rank=rank, world_size=3,
                        transform=video_hash)
        part = list(ds)
        assert part, f"rank {rank} got nothing"
        seen += part
    assert sorted(i for i, _ in seen) == list(range(5, 15))
    assert dict(seen) == expected_hashes(r, 1, range(5, 15))


def test_stream_workers_after_opencv_use_do_not_hang():
    # Regression: a trainer that renders (or previews) a clip in the main process before starting its
    # DataLoader. If OpenCV's thread pool was running in the parent, a forked worker calling
    # cv2.setNumThreads deadlocks in pthread_cond_destroy. DataLoader(timeout=...) turns such a hang
    # into an error instead of blocking forever.
    code = textwrap.dedent(f"""
        import time
        from torch.utils.data import DataLoader
        from generators import ClipStream, render_clip
        render_clip("black+objects", 0, 0, {FRAMES}, {SIZE})
        time.sleep(0.3)   # OpenCV's idle pool threads go to sleep on their condition variable
        ds = ClipStream("black+objects", seed=0, frames={FRAMES}, size=32, length=4)
        print(len(list(DataLoader(ds, batch_size=None, num_workers=2, timeout=8))))
    """)
    proc = run_python(code, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "4"


# ---- smile-synth generate with 1 and 2 workers -----------------------------------------------

def test_generate_one_or_two_workers_give_identical_data(tmp_path):
    args = ["generate", "--n", 12, "--frames", FRAMES, "--size", SIZE, "--shard-size", 5, "--recipe", "mixed",
            "--set", "background.bank_size=2", "--seed", 9, "--quiet"]
    data, tars = {}, {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        proc = run_module(*args, "--out", out, "--workers", workers, timeout=240)
        assert proc.returncode == 0, proc.stderr
        data[workers] = read_samples(out)
        tars[workers] = {p.name: p.read_bytes() for p in sorted(out.glob("shard-*.tar"))}
    assert list(tars[1]) == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert tars[1] == tars[2]  # the very same bytes (generate.py: stored bytes depend only on the arguments)
    assert sorted(data[1]) == sorted(data[2]) == [sample_key(i) for i in range(12)]
    r = recipe("mixed")
    for key in data[1]:
        one, two = decode_sample(data[1][key]), decode_sample(data[2][key])
        np.testing.assert_array_equal(one.video, two.video)
        np.testing.assert_array_equal(one.masks, two.masks)
        np.testing.assert_array_equal(one.boxes, two.boxes)
        assert one.meta == two.meta
        assert data[1][key]["json"] == data[2][key]["json"]
        ref = render_clip(r, 9, int(key), FRAMES, SIZE)  # and both are the clip render_clip defines
        np.testing.assert_array_equal(one.masks, ref.masks)


def test_generate_api_with_workers_after_opencv_use_does_not_hang(tmp_path):
    # Regression: the same fork-after-OpenCV deadlock in generate()'s worker pool initializer.
    code = textwrap.dedent(f"""
        import faulthandler, time
        faulthandler.dump_traceback_later(12, exit=True)   # a hang becomes a non-zero exit
        from generators import get_recipe, render_clip
        from smile_synth.app.generate import GenerateConfig, generate
        render_clip("black+objects", 0, 0, {FRAMES}, {SIZE})   # e.g. a notebook that looked at a clip first
        time.sleep(0.3)
        m = generate(GenerateConfig(n=4, out={str(tmp_path / 'out')!r}, recipe=get_recipe("black+objects"),
                                    frames={FRAMES}, size=32, shard_size=2, workers=2), progress=False)
        print(m["clips"])
    """)
    proc = run_python(code, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "4"
