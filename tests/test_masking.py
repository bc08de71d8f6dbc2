"""Token masks of the pretrainer: tube masking, SMILE's trajectory masking, and object coverage."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.masking import (
    MaskSpec,
    TrajectoryMasker,
    masked_count,
    object_token_coverage,
    trajectory_mask,
    tube_mask,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def spatial_slots(mask: torch.Tensor, grid) -> torch.Tensor:
    """(B, N) -> (B, T', H'*W'): the mask of each frame slot."""
    t, h, w = grid
    return mask.reshape(mask.shape[0], t, h * w)


# ---- masked_count ------------------------------------------------------------------------------

@pytest.mark.parametrize("grid, ratio, expected", [
    ((8, 14, 14), 0.8, 1248),       # 16 frames at 224 px: floor(0.8 * 196) = 156 per slot, x 8
    ((8, 14, 14), 0.9, 1408),       # floor(176.4) = 176 per slot
    ((4, 7, 7), 0.75, 144),         # floor(36.75) = 36 per slot, x 4
    ((2, 4, 4), 0.8, 24),           # floor(12.8) = 12 per slot
    ((1, 2, 2), 0.5, 2),
])
def test_masked_count(grid, ratio, expected):
    assert masked_count(grid, ratio) == expected


# ---- tube masks --------------------------------------------------------------------------------

def test_tube_mask_count_and_shared_spatial_mask():
    grid = (4, 7, 7)
    mask = tube_mask(6, grid, 0.75, gen(0))
    assert mask.dtype == torch.bool and mask.shape == (6, 4 * 49)
    assert mask.sum(1).tolist() == [144] * 6
    slots = spatial_slots(mask, grid)
    assert slots.sum(2).tolist() == [[36] * 4] * 6
    # the same spatial mask in every frame slot (a "tube" through time)
    assert torch.equal(slots, slots[:, :1].expand_as(slots))
    # each clip draws its own mask
    for i in range(6):
        for j in range(i + 1, 6):
            assert not torch.equal(mask[i], mask[j]), (i, j)


def test_tube_mask_depends_on_generator_and_is_deterministic():
    grid = (2, 14, 14)
    a = tube_mask(3, grid, 0.8, gen(1))
    b = tube_mask(3, grid, 0.8, gen(1))
    c = tube_mask(3, grid, 0.8, gen(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (a != c).any(dim=1).all()        # every clip changes with the generator's seed


def test_tube_mask_covers_every_position_over_many_draws():
    """The spatial mask is uniformly random: every position gets masked, none always."""
    mask = tube_mask(400, (1, 4, 4), 0.5, gen(3)).float()
    share = mask.mean(0)
    assert share.min() > 0.35 and share.max() < 0.65, share


# ---- object coverage ---------------------------------------------------------------------------

def test_object_token_coverage_hand_made():
    # 4 frames of 32 x 32 -> tubelet 2, patch 16 -> token grid (2, 2, 2), tokens in (t, h, w) order
    objects = torch.zeros(2, 4, 32, 32, dtype=torch.bool)
    objects[0, 0:2, 0:16, 16:32] = True     # exactly the cube of token (t0, h0, w1) = 1
    objects[0, 2:4, 16:32, 0:8] = True      # half the cube of token (t1, h1, w0) = 6 (left half)
    objects[0, 2, 16:32, 16:32] = True      # one of the two frames of token (t1, h1, w1) = 7
    objects[1, 3, 0, 0] = True              # one pixel of token (t1, h0, w0) = 4
    cov = object_token_coverage(objects, tubelet=2, patch=16)
    assert cov.dtype == torch.float32 and cov.shape == (2, 8)
    expected0 = torch.tensor([0, 1.0, 0, 0, 0, 0, 0.5, 0.5])
    expected1 = torch.zeros(8)
    expected1[4] = 1 / (2 * 16 * 16)
    assert torch.allclose(cov[0], expected0)
    assert torch.allclose(cov[1], expected1)


def test_object_token_coverage_uint8_input_and_full_frames():
    objects = torch.ones(1, 4, 48, 32, dtype=torch.uint8)   # non-square: 3 x 2 patches
    objects[0, :, 32:48, :] = 0
    cov = object_token_coverage(objects, tubelet=2, patch=16)
    assert cov.shape == (1, 2 * 3 * 2)
    assert cov.reshape(2, 3, 2).tolist() == [[[1, 1], [1, 1], [0, 0]]] * 2


# ---- trajectory masks --------------------------------------------------------------------------

def expected_visible(n_obj: int, unmask_ratio: float) -> set[int]:
    """round(unmask_ratio * n_obj); at an exact .5 either neighbour is accepted."""
    x = n_obj * unmask_ratio
    if abs(x - math.floor(x) - 0.5) < 1e-9:
        return {math.floor(x), math.ceil(x)}
    return {round(x)}


@pytest.mark.parametrize("grid", [(2, 4, 4), (4, 7, 7), (8, 14, 14)])
def test_trajectory_mask_counts_over_random_layouts(grid):
    rng = np.random.default_rng(sum(grid))
    t, h, w = grid
    N = t * h * w
    cases = 0
    for trial in range(60):
        ratio = float(rng.choice([0.5, 0.75, 0.8, 0.9]))
        unmask = float(rng.choice([0.0, 0.1, 0.125, 0.25, 0.5, 1.0]))
        B = 4
        k = masked_count(grid, ratio)
        # object-token budgets: none, a few, around the budget, more than the budget, all
        n_objs = [0, int(rng.integers(1, max(2, N // 10))), int(rng.integers(k // 2, k + 1)),
                  int(rng.integers(k + 1, N + 1)) if k < N else N][:B]
        objects = torch.zeros(B, N, dtype=torch.bool)
        for b, n in enumerate(n_objs):
            objects[b, torch.from_numpy(rng.permutation(N)[:n])] = True
        mask = trajectory_mask(objects, grid, ratio, unmask, gen(trial))
        assert mask.dtype == torch.bool and mask.shape == (B, N)
        assert mask.sum(1).tolist() == [k] * B, (trial, n_objs, ratio)
        for b, n in enumerate(n_objs):
            obj = objects[b]
            n_masked_obj = int((mask[b] & obj).sum())
            n_vis_obj = n - n_masked_obj
            want = expected_visible(n, unmask)
            lo_vis, hi_vis = min(want), max(want)
            if n - lo_vis <= k <= N - hi_vis:             # feasible: exactly the visible share stays visible
                assert n_vis_obj in want, (trial, b, n, n_vis_obj, want, k)
                cases += 1
            elif n - lo_vis > k:                            # more object tokens than the budget
                assert n_masked_obj == k, "only object tokens should be masked"
            else:                                           # too few tokens besides the visible share
                assert not (~mask[b] & ~obj).any(), "every non-object token should be masked first"
    assert cases > 60


def test_trajectory_mask_without_objects_is_a_tube_mask():
    grid = (4, 7, 7)
    mask = trajectory_mask(torch.zeros(5, 196, dtype=torch.bool), grid, 0.8, 0.1, gen(0))
    slots = spatial_slots(mask, grid)
    assert mask.sum(1).tolist() == [masked_count(grid, 0.8)] * 5
    assert torch.equal(slots, slots[:, :1].expand_as(slots))


def test_trajectory_mask_masks_object_tokens_but_the_visible_share():
    grid = (4, 7, 7)
    objects = torch.zeros(3, 196, dtype=torch.bool)
    objects[:, 10:30] = True                  # 20 object tokens: 2 stay visible at unmask ratio 0.1
    mask = trajectory_mask(objects, grid, 0.5, 0.1, gen(5))
    assert (mask & objects).sum(1).tolist() == [18, 18, 18]
    assert mask.sum(1).tolist() == [masked_count(grid, 0.5)] * 3
    # which object tokens stay visible is random
    visible = [tuple(torch.nonzero(objects[b] & ~mask[b]).flatten().tolist()) for b in range(3)]
    assert len(set(visible)) > 1


def test_trajectory_mask_deterministic_under_seeded_generator():
    objects = torch.rand(4, 98, generator=gen(9)) < 0.3
    a = trajectory_mask(objects, (2, 7, 7), 0.8, 0.1, gen(11))
    b = trajectory_mask(objects, (2, 7, 7), 0.8, 0.1, gen(11))
    c = trajectory_mask(objects, (2, 7, 7), 0.8, 0.1, gen(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# ---- TrajectoryMasker ----------------------------------------------------------------------------

def test_masker_traj_without_coverage_falls_back_to_tube():
    grid = (4, 7, 7)
    masker = TrajectoryMasker(MaskSpec("traj", 0.8, 0.1, 0.25), grid)
    assert masker.num_masked == masked_count(grid, 0.8)
    mask = masker(None, 3, gen(4))
    assert torch.equal(mask, tube_mask(3, grid, 0.8, gen(4)))
    slots = spatial_slots(mask, grid)
    assert torch.equal(slots, slots[:, :1].expand_as(slots))


def test_masker_tube_ignores_coverage():
    grid = (2, 4, 4)
    coverage = torch.ones(2, 32)
    mask = TrajectoryMasker(MaskSpec("tube", 0.5), grid)(coverage, 2, gen(0))
    assert torch.equal(mask, tube_mask(2, grid, 0.5, gen(0)))


def test_masker_object_threshold():
    """A token is an object token when coverage >= object_threshold."""
    grid = (2, 4, 4)
    coverage = torch.zeros(2, 32)
    coverage[:, :6] = 0.25                     # at the threshold: object tokens
    coverage[:, 6:12] = 0.2499                 # just below: background
    masker = TrajectoryMasker(MaskSpec("traj", 0.5, traj_unmask_ratio=0.0, object_threshold=0.25), grid)
    for seed in range(10):
        mask = masker(coverage, 2, gen(seed))
        assert mask[:, :6].all()               # unmask ratio 0: every object token masked
        assert mask.sum(1).tolist() == [16, 16]
    # with a high threshold nothing is an object: a plain tube mask
    mask = TrajectoryMasker(MaskSpec("traj", 0.5, 0.0, object_threshold=0.9), grid)(coverage, 2, gen(1))
    slots = spatial_slots(mask, grid)
    assert torch.equal(slots, slots[:, :1].expand_as(slots))


def test_masker_multiple_sampling_gives_different_masks():
    """Two draws from the same generator (multiple sampling) differ, each with the exact count."""
    grid = (4, 7, 7)
    coverage = torch.zeros(4, 196)
    coverage[:, 50:80] = 1.0
    for kind in ("tube", "traj"):
        masker = TrajectoryMasker(MaskSpec(kind, 0.8, 0.1), grid)
        g = gen(21)
        first, second = masker(coverage, 4, g), masker(coverage, 4, g)
        assert first.sum(1).tolist() == second.sum(1).tolist() == [masked_count(grid, 0.8)] * 4
        assert (first != second).any(dim=1).all(), kind


# ---- the registry of mask kinds ------------------------------------------------------------------

def test_mask_kinds_are_registered_and_auto_resolves():
    from training.masking import MASKS, mask_choices, resolve_mask_kind
    assert tuple(MASKS) == ("tube", "traj")
    assert mask_choices() == ("auto", "tube", "traj")
    assert resolve_mask_kind("auto", has_objects=True) == "traj"
    assert resolve_mask_kind("auto", has_objects=False) == "tube"
    assert resolve_mask_kind("tube", has_objects=True) == "tube"
    with pytest.raises(ValueError, match="unknown mask kind 'auto'"):
        TrajectoryMasker(MaskSpec("auto"), (2, 4, 4))


def test_a_registered_mask_kind_is_a_cli_choice_and_a_masker(monkeypatch):
    from training import masking
    from training.config import PretrainConfig

    def everything(spec, grid):
        return lambda coverage, batch, generator=None: torch.ones(batch, math.prod(grid), dtype=torch.bool)

    monkeypatch.setitem(masking.MASKS, "everything", everything)
    assert masking.mask_choices()[-1] == "everything"
    cfg = PretrainConfig(recipe="black+objects", steps=1, mask="everything").validate()
    assert cfg.mask_kind == "everything"
    assert TrajectoryMasker(MaskSpec("everything"), (2, 2, 2))(None, 3).all()
