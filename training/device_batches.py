"""Batches painted on the training device (`pretrain --render-device`).

DataLoader workers draw the batch's clip plans (generators.plan: small arrays, no pixels) and decode
any natural clips; the training process then paints the synthetic clips and the overlaid objects on
the device with generators.torch_render and computes the token coverage there, so no rendered pixel
crosses the host. A batch is a pure function of its step, as on the numpy path: resumed runs see the
same clips.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from generators.torch_render import BatchPlan, rasterise, stack_plans

from .masking import object_token_coverage


@dataclass
class RenderJob:
    """What the device still has to do for a batch of B clips of T x S x S.

    rendered: positions of the clips painted from `rendered_plan`; host: positions of the clips that
    come as pixels (host_video uint8 (n, T, S, S, 3), host_objects bool (n, T, S, S) or None);
    overlaid: positions (among host) that get the objects of `overlay_plan` painted on."""
    shape: tuple[int, int, int]
    rendered: np.ndarray
    rendered_plan: BatchPlan | None
    host: np.ndarray
    host_video: torch.Tensor | None
    host_objects: torch.Tensor | None
    overlaid: np.ndarray
    overlay_plan: BatchPlan | None


def stack_pixels(samples: Sequence) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Samples that hold pixels -> (video uint8 (n, T, H, W, 3), objects bool (n, T, H, W), all False for a
    clip without objects; None when no clip has any)."""
    video = torch.from_numpy(np.stack([s.video for s in samples]))
    if all(s.objects is None for s in samples):
        return video, None
    none = np.zeros(video.shape[1:4], bool)
    return video, torch.from_numpy(np.stack([none if s.objects is None else s.objects for s in samples]))


def render_job(samples: Sequence) -> RenderJob | None:
    """The RenderJob of a batch's Samples (video, objects, plan), or None when none carries a plan
    (the batch is all pixels already)."""
    if all(s.plan is None for s in samples):
        return None
    rendered = [i for i, s in enumerate(samples) if s.video is None]
    host = [i for i, s in enumerate(samples) if s.video is not None]
    overlaid = [i for i in host if samples[i].plan is not None]
    host_video, host_objects = stack_pixels([samples[i] for i in host]) if host else (None, None)
    T, S = host_video.shape[1:3] if host else (samples[0].plan.frames, samples[0].plan.size)
    return RenderJob((len(samples), T, S), np.array(rendered, np.int64),
                     stack_plans([samples[i].plan for i in rendered]) if rendered else None,
                     np.array(host, np.int64), host_video, host_objects, np.array(overlaid, np.int64),
                     stack_plans([samples[i].plan for i in overlaid]) if overlaid else None)


def paint_job(job: RenderJob, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """-> (video uint8 (B, T, S, S, 3), objects bool (B, T, S, S) or None when no clip has objects), on device."""
    B, T, S = job.shape
    video = torch.empty((B, T, S, S, 3), dtype=torch.uint8, device=device)
    objects = torch.zeros((B, T, S, S), dtype=torch.bool, device=device)
    has_objects = False
    if job.rendered_plan is not None:
        out = rasterise(job.rendered_plan, device)
        rows = torch.from_numpy(job.rendered).to(device)
        video[rows], objects[rows] = out.video, out.objects()
        has_objects = bool(job.rendered_plan.counts.any())
    if job.host_video is not None:
        rows = torch.from_numpy(job.host).to(device)
        video[rows] = job.host_video.to(device, non_blocking=True)
        if job.host_objects is not None:
            objects[rows] = job.host_objects.to(device, non_blocking=True)
            has_objects = True
    if job.overlay_plan is not None:
        rows = torch.from_numpy(job.overlaid).to(device)
        out = rasterise(job.overlay_plan, device, video[rows])
        video[rows], objects[rows] = out.video, objects[rows] | out.objects()
        has_objects = has_objects or bool(job.overlay_plan.counts.any())
    return video, objects if has_objects else None


def realise(batch: dict, device: torch.device, tubelet: int, patch: int) -> dict:
    """A BatchStream batch with its RenderJob done: "video" and "coverage" (float32 (B, N)) on device."""
    job = batch.pop("render", None)
    if job is None or batch["error"] is not None:
        return batch
    video, objects = paint_job(job, device)
    coverage = None if objects is None else object_token_coverage(objects, tubelet, patch)
    return {**batch, "video": video, "coverage": coverage}


def render_device_for(name: str, training: torch.device) -> torch.device:
    """--render-device resolved for this process: a bare "cuda" means the rank's own GPU."""
    device = torch.device(name)
    if device.type == training.type and device.index is None:
        return training
    return device


class DeviceBatches:
    """The loader's batches, each realised on `device` as it is taken (its painting counts as data time)."""

    def __init__(self, loader: Iterable[dict], device: torch.device, tubelet: int, patch: int):
        self.loader, self.device, self.tubelet, self.patch = loader, device, tubelet, patch

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            yield realise(batch, self.device, self.tubelet, self.patch)
