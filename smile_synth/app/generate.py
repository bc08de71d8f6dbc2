"""`smile-synth generate`: render clips into WebDataset shards, resumable and split across ranks.

Shard s holds clips [s * shard_size, (s + 1) * shard_size). Rank r of W writes the shards with
s % W == r. A shard is complete iff its tar exists (it is renamed into place when whole), so a
rerun with the same arguments skips finished shards and redoes the rest.

Writers sharing a folder (ranks on a shared disk, or the same command started twice) coordinate
through locks in OUT/.locks: dataset.json is checked and created under one lock, each running
command holds the `run` lock shared, and a shard is written only under its own lock, which also
proves that its leftover temporary files are stale. Every shard's sidecar records the dataset's
fingerprint, so shards of another dataset are never adopted or completed.

Work is dealt to processes in segments of SEGMENT consecutive clips of one shard; each segment
gets a fresh video encoder (reused within it, see video_io.H264Encoder), so the stored bytes
depend only on the arguments, not on the worker count, rank split or resume history.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from tqdm import tqdm

from generators import check_annotations, prepare, render_clip
from generators.recipes import Recipe

from smile_synth.atomic import (
    disk_full_error,
    ensure_writable_folder,
    file_size,
    is_disk_full,
    temporaries_of,
    write_json_atomic,
)
from smile_synth.clip import check_geometry
from smile_synth.errors import UserError
from smile_synth.locks import FolderLocks
from smile_synth.shards import (
    DATASET,
    MANIFEST,
    SHARD_GLOB,
    ShardWriter,
    build_manifest,
    encode_sample,
    fingerprint,
    fingerprint_mismatch,
    sidecar_path,
    tar_is_whole,
    read_json,
    sample_key,
    shard_name,
)
from smile_synth.video_io import CODECS, ClipEncoder

log = logging.getLogger("smile_synth")
FORMAT_VERSION = 1
MAX_FAILED_SHARE = 0.01  # more failed clips than this and the run ends with an error
SEGMENT = 32  # clips per work unit (and per video encoder)


@dataclass(frozen=True)
class GenerateConfig:
    n: int
    out: str
    recipe: Recipe
    seed: int = 0
    frames: int = 16
    size: int = 224
    workers: int = 1
    shard_size: int = 1000
    rank: int = 0
    world_size: int = 1
    codec: str = "h264"
    annotations: tuple[str, ...] = ()   # names from generators.flow.ANNOTATIONS, stored per clip

    def validate(self) -> None:
        if self.n < 1:
            raise UserError(f"--n {self.n} must be >= 1")
        if self.shard_size < 1:
            raise UserError(f"--shard-size {self.shard_size} must be >= 1")
        if self.workers < 1:
            raise UserError(f"--workers {self.workers} must be >= 1")
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise UserError(f"--rank {self.rank} must be in [0, --world-size {self.world_size})")
        if "given" in self.recipe.background.kinds:
            raise UserError(f"recipe {self.recipe.name!r} overlays objects on given frames and renders no background; "
                            "pick a recipe from `smile-synth recipes` that has one, e.g. black+objects")
        if self.codec not in CODECS:
            raise UserError(f"--codec {self.codec!r} unknown; choose {', '.join(CODECS)}")
        check_geometry(self.frames, self.size, "--frames", "--size")
        check_annotations(self.annotations)

    @cached_property
    def fingerprint(self) -> str:
        """The dataset fingerprint every shard's sidecar records (shards.fingerprint of spec())."""
        return fingerprint(self.spec())

    def spec(self) -> dict[str, Any]:
        """What defines the dataset's content: a rerun must match it to resume."""
        spec = {"format_version": FORMAT_VERSION, "n": self.n, "recipe": self.recipe.to_dict(), "seed": self.seed,
                "frames": self.frames, "size": self.size, "shard_size": self.shard_size, "codec": asdict(CODECS[self.codec])}
        if self.annotations:   # only then: a plain dataset's spec and fingerprint stay what they were
            spec["annotations"] = list(check_annotations(self.annotations))   # in ANNOTATIONS order
        return spec


# ---- worker side --------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(cfg: GenerateConfig, quiet_interrupt: bool = False) -> None:
    _WORKER["cfg"] = cfg  # OpenCV is already single-threaded: importing generators sets that
    if quiet_interrupt:   # Ctrl-C reaches the whole process group: the parent alone reports it, once
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _render_segment(indices: range) -> list[tuple[int, dict[str, bytes] | None, str]]:
    """Render and encode consecutive clips with one fresh encoder; (index, sample, background)
    per clip, or (index, None, error text) for a clip that failed: never a crash."""
    cfg: GenerateConfig = _WORKER["cfg"]
    encoder = ClipEncoder(CODECS[cfg.codec])
    out = []
    for index in indices:
        try:
            clip = render_clip(cfg.recipe, cfg.seed, index, cfg.frames, cfg.size, annotations=cfg.annotations)
            out.append((index, encode_sample(clip, encoder=encoder), clip.meta["background"]))
        except Exception as e:  # one bad clip must not end a long run
            out.append((index, None, f"{type(e).__name__}: {e}"))
            encoder = ClipEncoder(CODECS[cfg.codec])  # its state may be broken; the next clip starts afresh
    return out


# ---- driver -------------------------------------------------------------------------------

def my_shards(cfg: GenerateConfig) -> list[int]:
    total = -(-cfg.n // cfg.shard_size)
    return [s for s in range(total) if s % cfg.world_size == cfg.rank]


def shard_indices(cfg: GenerateConfig, shard: int) -> range:
    return range(shard * cfg.shard_size, min((shard + 1) * cfg.shard_size, cfg.n))


def shard_complete(out: Path, shard: int) -> bool:
    """Written whole, with no failed clip (a shard with failed clips is redone by a rerun)."""
    tar = out / shard_name(shard)
    side = sidecar_path(tar)
    if not tar.is_file() or not tar_is_whole(tar):   # a shard cut short by a copy or a full disk is redone
        return False
    try:
        return not read_json(side).get("failed")
    except (OSError, ValueError):
        return False


def foreign_shards(out: Path, fp: str) -> list[str]:
    """Shards in `out` whose sidecar records another dataset's fingerprint, or none."""
    mismatches = ((tar, fingerprint_mismatch(tar, fp)) for tar in sorted(out.glob(SHARD_GLOB)))
    return [f"{tar.name} ({why})" for tar, why in mismatches if why]


def claim_dataset(out: Path, spec: dict[str, Any], locks: FolderLocks,
                  on_wait: Callable[[str], None]) -> None:
    """Check or create OUT/dataset.json under the `dataset` lock (`on_wait`: see waiting_notice), refuse
    foreign shards, and hold the `run` lock shared for the rest of this command."""
    spec_path = out / DATASET
    locks.acquire("dataset", on_wait=on_wait)
    try:
        old = read_json(spec_path) if spec_path.is_file() else None
        if old is not None and old != spec:
            diff = ", ".join(sorted(k for k in set(old) | set(spec) if old.get(k) != spec.get(k)))
            if old.get("annotations") != spec.get("annotations"):   # the one setting users flip on a rerun
                diff += (f": it has {'+'.join(old.get('annotations') or ['no annotations'])}, "
                         f"this run asks for {'+'.join(spec.get('annotations') or ['none'])}")
            if any(out.glob(SHARD_GLOB)):
                raise UserError(f"{out} already holds a dataset made with other settings ({diff}); "
                                "rerun with the same arguments to resume, or choose another --out")
            if not locks.acquire("run", wait=False):   # the other dataset's command is still running
                raise UserError(f"another generate is writing {out} with other settings ({diff}); "
                                "wait for it to finish or choose another --out")
        foreign = foreign_shards(out, fingerprint(spec))
        if foreign:
            raise UserError(f"{out} holds {len(foreign)} shards of another dataset (first: {foreign[0]}); "
                            "generate into an empty folder, or move those shards away")
        if old != spec:
            write_json_atomic(spec_path, spec)
        locks.acquire("run", shared=True)
    finally:
        locks.release("dataset")


def waiting_notice(out: Path) -> Callable[[str], None]:
    """on_wait for FolderLocks.acquire, one per command (every lock it waits on shares it): one warning per
    other process this command waits for (a suspended generate holds its locks until it is resumed or
    ends), so a wait is never silent."""
    told: set[str] = set()

    def notice(holder: str) -> None:
        if holder not in told:
            told.add(holder)
            log.warning("waiting for another generate writing %s (%s); it continues when that one finishes "
                        "(or is stopped)", out, holder)
    return notice


def remove_shard_temporaries(out: Path, shard: int) -> None:
    """Temporary files of `shard` and its sidecar; call only while holding its lock (so no live writer
    owns them)."""
    tar = out / shard_name(shard)
    for stale in [*out.glob(tar.name + ".tmp*"), *temporaries_of(sidecar_path(tar))]:
        stale.unlink(missing_ok=True)


def segments_of(indices: range) -> list[range]:
    return [range(i, min(i + SEGMENT, indices.stop)) for i in range(indices.start, indices.stop, SEGMENT)]


def generate(cfg: GenerateConfig, progress: bool = True) -> dict[str, Any]:
    """Write this rank's missing shards; returns the manifest of everything in cfg.out."""
    out = Path(cfg.out)
    ensure_writable_folder(out)
    spec = cfg.spec()
    if any(not shard_complete(out, s) for s in my_shards(cfg)):
        prepare(cfg.recipe, cfg.seed, cfg.size)  # fail fast on bad folders (before claiming --out)
    try:
        notice = waiting_notice(out)
        with FolderLocks(out) as locks:
            claim_dataset(out, spec, locks, notice)
            failed, total_clips = _write_my_shards(out, cfg, locks, progress, notice)
            locks.acquire("dataset", on_wait=notice)   # one manifest writer at a time, each seeing every finished shard
            manifest = build_manifest(out, spec)
            write_json_atomic(out / MANIFEST, manifest)
    except KeyboardInterrupt:
        raise UserError("interrupted; finished shards are kept, rerun the same command to resume") from None
    if failed:
        share = len(failed) / max(total_clips, 1)
        msg = f"{len(failed)} of {total_clips} clips failed and were left out (first: index {failed[0][0]}: {failed[0][1]})"
        if share > MAX_FAILED_SHARE:
            raise UserError(msg + "; fix the cause and rerun the same command: shards with failed clips are redone")
        log.warning(msg + "; rerun the same command to retry them")
    return manifest


def _write_my_shards(out: Path, cfg: GenerateConfig, locks: FolderLocks, progress: bool,
                     on_wait: Callable[[str], None]
                     ) -> tuple[list[tuple[int, str]], int]:
    """Write this rank's unfinished shards, each under its lock; shards another live command holds are
    waited for (`on_wait`: see waiting_notice), then looked at again. Returns (failed clips, clips attempted)."""
    failed: list[tuple[int, str]] = []
    total_clips = 0
    remaining = my_shards(cfg)
    while remaining:
        todo = [s for s in remaining if not shard_complete(out, s)]
        mine = [s for s in todo if locks.acquire(f"shard-{s:06d}", wait=False)]
        if todo and not mine:   # another live command writes these: wait for it, then look again
            locks.acquire(f"shard-{todo[0]:06d}", on_wait=on_wait)
            locks.release(f"shard-{todo[0]:06d}")
            remaining = todo
            continue
        for s in mine:
            remove_shard_temporaries(out, s)
        total_clips += sum(len(shard_indices(cfg, s)) for s in mine)
        failed += _render_shards(out, cfg, mine, locks, progress)
        remaining = [s for s in todo if s not in mine]   # each shard is tried once per command
    return failed, total_clips


def _render_shards(out: Path, cfg: GenerateConfig, shards: list[int], locks: FolderLocks,
                   progress: bool) -> list[tuple[int, str]]:
    """Render and write `shards` (their locks held; each is released once its shard is written)."""
    if not shards:
        return []
    failed: list[tuple[int, str]] = []
    segments = [seg for s in shards for seg in segments_of(shard_indices(cfg, s))]
    # forked workers share the texture banks prepare() built
    pool = mp.get_context("fork").Pool(cfg.workers, _init_worker, (cfg, True)) if cfg.workers > 1 else None
    if pool is None:
        _init_worker(cfg)
    done = pool.imap(_render_segment, segments) if pool else map(_render_segment, segments)
    results = (r for seg in done for r in seg)
    total = sum(len(shard_indices(cfg, s)) for s in shards)
    bar = tqdm(total=total, unit="clip", desc=f"generate r{cfg.rank}", disable=not progress, smoothing=0.05)
    try:   # Ctrl-C here reaches generate(), which reports it
        for s in shards:
            failed += _write_shard(out, cfg, s, results, bar)
            locks.release(f"shard-{s:06d}")
    finally:
        bar.close()
        if pool:
            pool.terminate()
    return failed


def _write_shard(out: Path, cfg: GenerateConfig, shard: int, results, bar) -> list[tuple[int, str]]:
    writer = ShardWriter(out / shard_name(shard))
    failed: list[tuple[int, str]] = []
    backgrounds: Counter = Counter()
    try:
        for _ in shard_indices(cfg, shard):
            index, sample, info = next(results)
            if sample is None:
                failed.append((index, info))
                log.warning("clip %d failed: %s", index, info)
            else:
                writer.write(sample_key(index), sample)
                backgrounds[info] += 1
            bar.update(1)
        idx = shard_indices(cfg, shard)
        side = {"shard": shard, "count": writer.count, "first": idx.start, "last": idx.stop - 1,
                "failed": [i for i, _ in failed], "backgrounds": dict(backgrounds), "fingerprint": cfg.fingerprint}
        write_json_atomic(sidecar_path(out / shard_name(shard)), side)
        writer.commit()
    except OSError as e:
        written = file_size(writer.tmp)
        writer.abort()
        if is_disk_full(e):
            raise disk_full_error(writer.path, written=written) from None
        raise UserError(f"cannot write {writer.path} ({e.strerror}); check --out and rerun to resume") from None
    except BaseException:
        writer.abort()
        raise
    return failed
