"""`smile-synth export-pairs`: frame pairs and flow read back with readers written from the formats' specs
(test_flow_io's) match the clips in the shards: exactly for .flo, to 1/64 px for KITTI."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import FRAMES, SIZE, assert_user_error, recipe, rewrite_member, run_cli
from test_flow_io import spec_read_flo, spec_read_kitti

from smile_synth.shards import iter_clips


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    """3 clips of noise+objects with flow, in shards of 2; clip 2 is on evolving noise (perlin3d), whose
    background flow is not valid."""
    from smile_synth.app.generate import GenerateConfig, generate

    out = tmp_path_factory.mktemp("flow") / "shards"
    generate(GenerateConfig(n=3, out=str(out), recipe=recipe("noise+objects"), seed=0, frames=FRAMES, size=SIZE,
                            shard_size=2, annotations=("flow",)), progress=False)
    return out


def read_rgb(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1]


def read_mask(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint8 and img.ndim == 2 and set(np.unique(img)) <= {0, 255}
    return img == 255


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_flo_export_matches_the_clips(annotated, tmp_path):
    out = tmp_path / "flo"
    res = run_cli("export-pairs", annotated, "--out", out, "--quiet")
    assert res.exit_code == 0, res.output
    clips = list(iter_clips(annotated))
    pairs = [line.split() for line in lines(out / "pairs.txt")]
    assert len(pairs) == 3 * (FRAMES - 1)
    assert f"wrote {len(pairs)} pairs of 3 clips" in res.output
    sources = [tuple(map(int, line.split())) for line in lines(out / "sources.txt")]
    assert sources == [(c.meta["index"], t) for c in clips for t in range(FRAMES - 1)]
    for (img1, img2, flo), (index, t) in zip(pairs, sources):
        clip = clips[index]
        np.testing.assert_array_equal(read_rgb(out / img1), clip.video[t])
        np.testing.assert_array_equal(read_rgb(out / img2), clip.video[t + 1])
        valid = clip.flow_valid[t]
        np.testing.assert_array_equal(spec_read_flo(out / flo), np.where(valid[..., None], clip.flow[t], 0))
        pair = Path(flo).name.split("_")[0]
        np.testing.assert_array_equal(read_mask(out / "masks" / f"{pair}_valid.png"), valid)
        np.testing.assert_array_equal(read_mask(out / "masks" / f"{pair}_occ.png"), clip.occluded[t])
    assert any(np.abs(spec_read_flo(out / p[2])).max() > 0.5 for p in pairs)       # objects move
    assert not all(c.flow_valid.all() for c in clips)                              # invalid pixels were tested


def test_flo_folder_loads_as_flyingchairs_readers_glob_it(annotated, tmp_path):
    """RAFT's FlyingChairs reader: sorted images (2 per pair) and sorted .flo in data/, one split code per pair."""
    out = tmp_path / "ppm"
    assert run_cli("export-pairs", annotated, "--out", out, "--images", "ppm", "--quiet").exit_code == 0
    images = sorted((out / "data").glob("*.ppm"))
    flows = sorted((out / "data").glob("*.flo"))
    split = np.loadtxt(out / "FlyingChairs_train_val.txt", dtype=np.int32)
    assert len(images) == 2 * len(flows) == 2 * len(split)
    listed = [line.split() for line in lines(out / "pairs.txt")]
    for i, (img1, img2, flo) in enumerate(listed):
        assert [images[2 * i], images[2 * i + 1], flows[i]] == [out / img1, out / img2, out / flo]
    index_of_pair = [int(line.split()[0]) for line in lines(out / "sources.txt")]
    assert list(split) == [2 if i % 20 == 0 else 1 for i in index_of_pair]      # clip 0 is validation
    clip0 = next(iter_clips(annotated))
    np.testing.assert_array_equal(read_rgb(images[0]), clip0.video[0])


def test_kitti_export_matches_the_clips(annotated, tmp_path):
    out = tmp_path / "kitti"
    res = run_cli("export-pairs", annotated, "--out", out, "--format", "kitti", "--n", 2, "--quiet")
    assert res.exit_code == 0, res.output
    clips = list(iter_clips(annotated))
    listed = [line.split() for line in lines(out / "pairs.txt")]
    assert len(listed) == 2 * (FRAMES - 1)                                         # --n 2 clips
    assert sorted((out / "training/image_2").glob("*_10.png")) == [out / p[0] for p in listed]
    assert sorted((out / "training/image_2").glob("*_11.png")) == [out / p[1] for p in listed]
    for (img1, img2, flow_occ), line in zip(listed, lines(out / "sources.txt")):
        index, t = map(int, line.split())
        clip = clips[index]
        np.testing.assert_array_equal(read_rgb(out / img1), clip.video[t])
        np.testing.assert_array_equal(read_rgb(out / img2), clip.video[t + 1])
        u, v, b = spec_read_kitti(out / flow_occ)
        valid = clip.flow_valid[t]
        np.testing.assert_array_equal(b, valid)
        assert np.abs(u[valid] - clip.flow[t, ..., 0][valid]).max() <= 1 / 128 + 1e-6
        assert np.abs(v[valid] - clip.flow[t, ..., 1][valid]).max() <= 1 / 128 + 1e-6
        *_, b_noc = spec_read_kitti(out / flow_occ.replace("flow_occ", "flow_noc"))
        np.testing.assert_array_equal(b_noc, valid & ~clip.occluded[t])


def test_plain_shards_and_busy_folders_are_one_line(annotated, small_dataset, tmp_path):
    plain, *_ = small_dataset
    assert_user_error(run_cli("export-pairs", plain, "--out", tmp_path / "a", "--quiet"), "--annotations flow")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert_user_error(run_cli("export-pairs", annotated, "--out", busy), "not an empty folder")
    assert (busy / "keep.txt").read_text() == "mine"
    assert_user_error(run_cli("export-pairs", annotated, "--out", tmp_path / "b", "--n", 0), "--n 0")
    assert_user_error(run_cli("export-pairs", annotated, "--out", tmp_path / "c", "--format", "png"), "png")


def test_a_corrupt_clip_is_skipped_not_fatal(annotated, tmp_path):
    import shutil

    shards = tmp_path / "shards"
    shutil.copytree(annotated, shards)
    rewrite_member(shards / "shard-000000.tar", "000000001.flow.zlib", lambda b: b[:-3] + b"xyz")
    res = run_cli("export-pairs", shards, "--out", tmp_path / "out", "--quiet")
    assert res.exit_code == 0, res.output
    assert "skipped 1 unreadable clips" in res.output and "000000001" in res.output
    assert [int(line.split()[0]) for line in lines(tmp_path / "out/sources.txt")] == [0] * 3 + [2] * 3


def test_torchvision_readers_load_the_folders_as_they_are(annotated, tmp_path):
    """torchvision's FlyingChairs (ROOT/FlyingChairs/data/*.ppm + FlyingChairs_train_val.txt) and KittiFlow
    (ROOT/KittiFlow/training/...) datasets read the exports without any change."""
    datasets = pytest.importorskip("torchvision.datasets")
    assert run_cli("export-pairs", annotated, "--out", tmp_path / "FlyingChairs", "--images", "ppm",
                   "--quiet").exit_code == 0
    assert run_cli("export-pairs", annotated, "--out", tmp_path / "KittiFlow", "--format", "kitti",
                   "--quiet").exit_code == 0
    clips = list(iter_clips(annotated))
    sources = [tuple(map(int, line.split())) for line in lines(tmp_path / "FlyingChairs/sources.txt")]
    train = [s for s in sources if s[0] % 20 != 0]
    chairs = datasets.FlyingChairs(tmp_path, split="train")
    assert len(chairs) == len(train)
    img1, img2, flow = chairs[0]
    index, t = train[0]
    np.testing.assert_array_equal(np.asarray(img1), clips[index].video[t])
    np.testing.assert_array_equal(np.asarray(img2), clips[index].video[t + 1])
    valid = clips[index].flow_valid[t]
    np.testing.assert_array_equal(flow.transpose(1, 2, 0), np.where(valid[..., None], clips[index].flow[t], 0))
    kitti = datasets.KittiFlow(tmp_path, split="train")
    assert len(kitti) == len(sources)
    img1, img2, flow, valid = kitti[len(sources) - 1]
    index, t = sources[-1]
    np.testing.assert_array_equal(np.asarray(img2), clips[index].video[t + 1])
    np.testing.assert_array_equal(valid, clips[index].flow_valid[t])
    assert not valid.all()                                      # the last clip is on evolving noise
    np.testing.assert_allclose(flow.transpose(1, 2, 0)[valid], clips[index].flow[t][valid], atol=1 / 128 + 1e-6)
