"""`smile-synth inspect`: what a shard directory holds (with the annotations its clips carry), and (with
verify) whether all of it decodes, annotations included."""
from __future__ import annotations

import json
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from smile_synth.shard_annotations import annotations_of
from smile_synth.shards import DATASET, BadShard, decode_sample, fingerprint, fingerprint_mismatch, iter_samples, read_json, shard_paths


@dataclass
class Report:
    shards: int = 0
    clips: int = 0
    bytes: int = 0
    recipes: Counter = field(default_factory=Counter)
    backgrounds: Counter = field(default_factory=Counter)
    objects: Counter = field(default_factory=Counter)
    annotations: Counter = field(default_factory=Counter)   # name -> clips that carry it
    corrupt: list[tuple[str, str, str]] = field(default_factory=list)  # shard, key, why
    duplicates: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)  # neither stored nor recorded as failed
    failed: list[int] = field(default_factory=list)  # recorded by generate as failed to render
    foreign: list[str] = field(default_factory=list)  # shards whose sidecar fingerprint is not dataset.json's
    spec: dict[str, Any] | None = None

    @property
    def problems(self) -> int:
        """Everything that makes the folder not a whole, consistent dataset."""
        return len(self.corrupt) + len(self.missing) + len(self.duplicates) + len(self.failed) + len(self.foreign)

    def lines(self) -> list[str]:
        per = self.bytes / max(self.clips, 1) / 1024
        out = [f"{self.clips} clips in {self.shards} shards, {self.bytes / 2**20:.1f} MiB ({per:.1f} KiB/clip)"]
        if self.spec:
            out.append(f"spec: n={self.spec['n']} seed={self.spec['seed']} frames={self.spec['frames']} "
                       f"size={self.spec['size']} recipe={self.spec['recipe']['name']} v{self.spec['recipe']['version']}")
        for title, hist in (("recipes", self.recipes), ("backgrounds", self.backgrounds), ("objects per clip", self.objects)):
            if hist:
                total = sum(hist.values())
                out.append(f"{title}: " + ", ".join(f"{k} {v} ({100 * v / total:.0f}%)" for k, v in sorted(hist.items(), key=lambda kv: -kv[1])))
        out.append("annotations: " + (", ".join(f"{k} in {v} of {self.clips} clips" for k, v in self.annotations.items())
                                      or "none (generate --annotations flow,tracks adds them)"))
        if self.missing:
            out.append(f"missing indices: {len(self.missing)} (first {self.missing[:10]}); unfinished shards or ranks: "
                       "rerun generate with the same arguments")
        if self.failed:
            out.append(f"failed to render: {len(self.failed)} (first {self.failed[:10]}); a rerun of generate retries them")
        if self.duplicates:
            out.append(f"duplicate indices: {len(self.duplicates)} (first {self.duplicates[:10]})")
        for shard in self.foreign[:50]:
            out.append(f"FOREIGN {shard}: not part of this folder's dataset.json")
        for shard, key, why in self.corrupt[:50]:
            out.append(f"CORRUPT {shard} {key}: {why}")
        if len(self.corrupt) > 50:
            out.append(f"... and {len(self.corrupt) - 50} more corrupt samples")
        return out


def inspect(path: str | Path, verify: bool = False, progress: bool = True) -> Report:
    rep = Report()
    p = Path(path)
    if p.is_dir() and (p / DATASET).is_file():
        rep.spec = read_json(p / DATASET)
    shards = shard_paths(p)
    rep.shards = len(shards)
    rep.bytes = sum(s.stat().st_size for s in shards)
    seen: Counter = Counter()
    bar = tqdm(total=len(shards), unit="shard", desc="verify" if verify else "inspect", disable=not progress)
    for shard in shards:
        try:
            for name, key, sample in iter_samples(shard, on_bad=None):
                rep.clips += 1
                try:
                    idx = int(key)
                    seen[idx] += 1
                    meta = json.loads(sample["json"])
                    rep.recipes[meta.get("recipe", "?")] += 1
                    rep.backgrounds[meta.get("background", "?")] += 1
                    rep.objects[str(meta.get("num_objects", "?"))] += 1
                    present = annotations_of(sample)
                    rep.annotations.update(present)
                    wanted = rep.spec.get("annotations", []) if rep.spec else present
                    if set(present) != set(wanted):
                        raise ValueError(f"has annotations {'+'.join(present) or 'none'}, dataset.json says "
                                         f"{'+'.join(wanted) or 'none'}")
                    if verify:
                        decode_sample(sample)
                except (ValueError, KeyError) as e:
                    rep.corrupt.append((name, key, str(e)))
        except (tarfile.TarError, OSError, EOFError, BadShard) as e:
            rep.corrupt.append((shard.name, "*", f"unreadable shard: {e}"))
        if verify and rep.spec:
            why = fingerprint_mismatch(shard, fingerprint(rep.spec))
            if why:
                rep.foreign.append(f"{shard.name} ({why})")
        bar.update(1)
    bar.close()
    rep.duplicates = sorted(i for i, c in seen.items() if c > 1)
    if rep.spec:  # a shard folder of a known dataset: every index should be there
        manifest = p / "manifest.json"
        failed = set(read_json(manifest).get("failed", [])) if manifest.is_file() else set()
        rep.failed = sorted(failed)
        rep.missing = sorted(set(range(rep.spec["n"])) - set(seen) - failed)
    return rep
