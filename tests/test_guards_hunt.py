"""Small documented behaviours where a planted bug passed every other test (issue 24, item 7; the planted
bugs and what caught them are listed in the closing note of that issue)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from smile_synth.atomic import TMP, remove_stale_temporaries

from eval.tasks import task_examples, window_starts


# ---- smile_synth/atomic.py -----------------------------------------------------------------------------------

def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    """`replacing` writes .NAME.tmpPID; a run that starts removes those whose writer is gone, and must leave a
    live writer's (another process still writing into the folder) alone."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".checkpoint.pt{TMP}{dead_pid}"
    live = tmp_path / f".log.jsonl{TMP}{os.getpid()}"
    odd = tmp_path / f".notes.txt{TMP}abc"                # not a pid: not ours to judge
    other = tmp_path / f"checkpoint.pt{TMP}{dead_pid}"     # no leading dot: not a `replacing` temporary
    for p in (stale, live, odd, other):
        p.write_bytes(b"partial")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and odd.exists() and other.exists()


def test_stale_temporaries_outside_the_pattern_are_kept(tmp_path):
    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                  capture_output=True, text=True).stdout)
    mine, theirs = tmp_path / f".a.pt{TMP}{dead_pid}", tmp_path / f".b.json{TMP}{dead_pid}"
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
