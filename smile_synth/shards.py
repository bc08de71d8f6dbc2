"""WebDataset-format shards: one tar per shard, one sample per clip, plus a manifest.

A sample with key "000000123" holds
    000000123.video.h264   the clip (see video_io; ".video.jpgs" with the jpeg codec)
    000000123.masks.zlib   bool masks (K, T, H, W) as bits (numpy packbits), zlib level 1; about 10x
                           faster to write than a PNG label map and no larger
    000000123.boxes.npy    float32 (K, T, 4) x1 y1 x2 y2, NaN where not visible
    000000123.json         meta (recipe, seed, index, objects, ...), num_objects, frames, size and
                           a BLAKE2b checksum of every other member (flipped bits decode silently)
and, only when generated with --annotations (a plain sample has neither, so plain shards are unchanged):
    000000123.flow.zlib    zlib level 6 of: flow and flow_back as float16, row-delta coded (see
                           shard_annotations.flow_bytes; 3x smaller than plain float16), then flow_valid,
                           flow_back_valid, occluded (T-1, H, W) as bits (numpy packbits)
    000000123.tracks.zlib  zlib level 6 of: tracks float32 (N, T, 2) as a .npy (header gives N), then
                           track_visible (N, T) as bits
Shards are written to a temporary name and renamed when complete, so a shard that exists is whole.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import replacing, write_json_atomic  # noqa: F401 - write_json_atomic re-exported for one release
from .clip import Clip
from .shard_annotations import annotation_members, decode_annotations
from .video_io import DEFAULT_CODEC, ClipEncoder, Codec, decode_video

SHARD_GLOB = "shard-*.tar"
MANIFEST = "manifest.json"
DATASET = "dataset.json"
MEMBER = re.compile(r"^(?P<key>\d{9,})\.(?P<ext>[a-z0-9]+(\.[a-z0-9]+)*)$")   # 000000123.video.h264
# errors a damaged, truncated or foreign tar can raise while it is read
SHARD_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)
log = logging.getLogger(__name__)


class BadShard(ValueError):
    """A shard (or one of its members) that cannot be read; the message names it and why."""


def fingerprint(spec: dict[str, Any]) -> str:
    """Short digest of a dataset's spec (everything in dataset.json that defines the content).
    Every shard's sidecar records it, so shards of another dataset are never adopted."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def sidecar_path(shard: Path) -> Path:
    return Path(shard).with_suffix(".json")


def fingerprint_mismatch(shard: Path, expected: str) -> str | None:
    """None when `shard`'s sidecar records the fingerprint `expected`; else what it records instead."""
    try:
        theirs = read_json(sidecar_path(shard)).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        theirs = None
    if theirs == expected:
        return None
    return "no fingerprint" if theirs is None else f"fingerprint {theirs}"


def shard_name(shard_id: int) -> str:
    return f"shard-{shard_id:06d}.tar"


def sample_key(index: int) -> str:
    return f"{index:09d}"


# ---- one sample ---------------------------------------------------------------------------

def encode_sample(clip: Clip, codec: Codec = DEFAULT_CODEC, encoder: ClipEncoder | None = None) -> dict[str, bytes]:
    """Clip -> {extension: bytes} (without the key). Pass an `encoder` to reuse it across clips."""
    encoder = encoder or ClipEncoder(codec)
    T, H, W = clip.video.shape[:3]
    buf = io.BytesIO()
    np.save(buf, clip.boxes.astype(np.float32), allow_pickle=False)
    members = {
        f"video.{encoder.codec.extension}": encoder.encode(clip.video),
        "masks.zlib": zlib.compress(np.packbits(clip.masks).tobytes(), 1),
        "boxes.npy": buf.getvalue(),
        **annotation_members(clip),
    }
    meta = dict(clip.meta, num_objects=clip.num_objects, frames=T, size=[H, W],
                checksums={k: checksum(v) for k, v in members.items()})
    return dict(members, json=json.dumps(meta).encode())


def checksum(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def decode_sample(sample: dict[str, bytes]) -> Clip:
    """{extension: bytes} -> Clip. Raises ValueError if anything is missing or corrupt."""
    try:
        meta = json.loads(sample["json"])
        for member, digest in meta.pop("checksums", {}).items():
            if checksum(sample[member]) != digest:
                raise ValueError(f"{member} does not match its checksum (corrupted bytes)")
        ext = next((k for k in sample if k.startswith("video.")), None)
        if ext is None:
            raise ValueError(f"no video member (has {', '.join(sorted(sample)) or 'nothing'})")
        video = decode_video(sample[ext], ext.split(".", 1)[1])
        T, H, W = video.shape[:3]
        if T != meta["frames"] or [H, W] != meta["size"]:
            raise ValueError(f"decoded {T}x{H}x{W}, expected {meta['frames']}x{meta['size']}")
        K = int(meta["num_objects"])
        bits = np.frombuffer(zlib.decompress(sample["masks.zlib"]), np.uint8)
        if bits.size != -(-K * T * H * W // 8):
            raise ValueError(f"masks hold {bits.size * 8} bits, expected {K * T * H * W}")
        masks = np.unpackbits(bits, count=K * T * H * W).view(bool).reshape(K, T, H, W)
        boxes = np.load(io.BytesIO(sample["boxes.npy"]), allow_pickle=False)
        annotations = decode_annotations(sample, T, H, W)
    except KeyError as e:
        raise ValueError(f"incomplete sample: no {e.args[0]!r} member") from None
    except (json.JSONDecodeError, OSError, zlib.error) as e:
        raise ValueError(f"incomplete sample: {type(e).__name__} {e}") from None
    return Clip(video, masks, boxes, meta, **annotations)


# ---- tar files ----------------------------------------------------------------------------

class ShardWriter:
    """Appends samples to `<path>.tmp`; `commit()` renames it to `path`, `abort()` deletes it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
        self.tar = tarfile.open(self.tmp, "w")
        self.count = 0

    def write(self, key: str, sample: dict[str, bytes]) -> None:
        for ext, data in sample.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed mtime: same arguments, same bytes
            self.tar.addfile(info, io.BytesIO(data))
        self.count += 1

    def commit(self) -> None:
        self.tar.close()
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.tar.close()
        except OSError:
            pass
        self.tmp.unlink(missing_ok=True)


def member_key(name: str) -> str:
    """The sample key of a member name; BadShard with a plain reason for a name this format never writes."""
    m = MEMBER.match(Path(name).name)
    if m is None:
        raise BadShard(f"member {name!r} is not named KEY.EXT with a 9-digit sample key (not a smile-synth shard?)")
    return m["key"]


def _grouped_members(tar: tarfile.TarFile) -> Iterator[tuple[str, list[tarfile.TarInfo]]]:
    """(key, file members) of each sample, in tar order (a sample's members are adjacent)."""
    key, members = None, []
    for m in tar:
        if not m.isfile():
            continue
        k = member_key(m.name)
        if k != key and members:
            yield key, members
            members = []
        key = k
        members.append(m)
    if members:
        yield key, members


def _read_members(tar: tarfile.TarFile, members: list[tarfile.TarInfo]) -> dict[str, bytes]:
    """{extension: bytes}, e.g. {"video.h264": ..., "json": ...}."""
    return {Path(m.name).name.partition(".")[2]: tar.extractfile(m).read() for m in members}


def tar_is_whole(shard: Path) -> bool:
    """The tar ends with its end-of-archive marker (two zero blocks). tarfile reads a file cut at a
    header boundary as a shorter, valid archive; this is how such a cut is noticed."""
    try:
        size = os.path.getsize(shard)
        if size < 2 * tarfile.BLOCKSIZE or size % tarfile.BLOCKSIZE:
            return False
        with open(shard, "rb") as f:
            f.seek(size - 2 * tarfile.BLOCKSIZE)
            return not any(f.read(2 * tarfile.BLOCKSIZE))
    except OSError:
        return False


def _check_whole(shard: Path) -> None:
    if not tar_is_whole(shard):
        raise BadShard(f"truncated: no end-of-archive marker ({os.path.getsize(shard)} bytes)")


def warn_bad_shard(shard: Path, reason: str) -> None:
    log.warning("skipping unreadable shard %s: %s", shard, reason)


def _shard_reason(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text if isinstance(e, BadShard) else f"{type(e).__name__}: {text or 'truncated or not a tar file'}"


def iter_samples(path: str | Path, on_bad: Callable[[Path, str], None] | None = warn_bad_shard
                 ) -> Iterator[tuple[str, str, dict[str, bytes]]]:
    """(shard name, key, {extension: bytes}) for every sample of a shard or shard directory.

    A truncated, empty or garbage shard is reported to `on_bad(shard, reason)` (default: a warning
    naming it) and skipped from the point it breaks; the samples before that point are still yielded.
    on_bad=None raises BadShard instead."""
    for shard in shard_paths(path):
        try:
            with tarfile.open(shard, "r") as tar:
                for key, members in _grouped_members(tar):
                    yield shard.name, key, _read_members(tar, members)
            _check_whole(shard)
        except (*SHARD_ERRORS, BadShard) as e:
            if on_bad is None:
                raise BadShard(f"{shard.name}: {_shard_reason(e)}") from None
            on_bad(shard, _shard_reason(e))


def sample_spans(shard: Path) -> list[tuple[str, int, int]]:
    """(key, start, end): the byte span of each sample of one shard, from the tar headers only
    (for random access with read_sample_at). BadShard naming the shard when it cannot be indexed."""
    spans = []
    try:
        with tarfile.open(shard, "r") as tar:
            for key, members in _grouped_members(tar):
                last = members[-1]
                end = last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                spans.append((key, members[0].offset, end))
        _check_whole(shard)
    except (*SHARD_ERRORS, BadShard) as e:
        raise BadShard(f"{Path(shard).name}: {_shard_reason(e)}") from None
    size = Path(shard).stat().st_size
    if spans and spans[-1][2] > size:   # headers survived but the data was cut off
        raise BadShard(f"{Path(shard).name}: truncated ({size} bytes, samples need {spans[-1][2]})")
    return spans


def read_sample_at(shard: Path, start: int, end: int) -> dict[str, bytes]:
    """{extension: bytes} of the sample spanning bytes [start, end) of a shard (see sample_spans)."""
    with open(shard, "rb") as f:
        f.seek(start)
        chunk = f.read(end - start)
    with tarfile.open(fileobj=io.BytesIO(chunk), mode="r") as tar:
        groups = list(_grouped_members(tar))
        if len(groups) != 1:
            raise ValueError(f"{shard.name} bytes {start}-{end} hold {len(groups)} samples, not 1")
        return _read_members(tar, groups[0][1])


def shard_paths(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"{p} is neither a shard nor a directory of shards")
    return sorted(p.glob(SHARD_GLOB))


def iter_clips(path: str | Path, on_bad: Callable[[Path, str], None] | None = warn_bad_shard) -> Iterator[Clip]:
    """Read a shard directory (or one shard) back as Clips, in index order within each shard.
    Unreadable shards go to `on_bad` (see iter_samples); a corrupt sample raises ValueError."""
    for _, _, sample in iter_samples(path, on_bad):
        yield decode_sample(sample)


# ---- manifest -----------------------------------------------------------------------------

def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def build_manifest(out: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Summarise every completed shard in `out` (from their sidecar .json files)."""
    shards = []
    for tar in sorted(out.glob(SHARD_GLOB)):
        side = sidecar_path(tar)
        if side.is_file():
            shards.append(dict(read_json(side), file=tar.name, bytes=tar.stat().st_size))
    expected = -(-spec["n"] // spec["shard_size"])
    hist: dict[str, int] = {}
    for s in shards:
        for k, v in s.get("backgrounds", {}).items():
            hist[k] = hist.get(k, 0) + v
    return {
        "spec": spec,
        "shards": shards,
        "num_shards": len(shards),
        "expected_shards": expected,
        "complete": len(shards) == expected,
        "clips": sum(s["count"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "failed": sorted(i for s in shards for i in s.get("failed", [])),
        "backgrounds": hist,
    }
