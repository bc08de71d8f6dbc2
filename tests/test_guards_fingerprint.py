"""The dataset fingerprint covers everything that defines a dataset's content (README "Shards know their
dataset"), and generate refuses a shard whose sidecar records another dataset's fingerprint, whatever
dataset.json says, so a shard made with another seed is never adopted."""
from __future__ import annotations

import copy
import dataclasses
import shutil
from typing import Any

import pytest
from conftest import recipe

from smile_synth.app.generate import GenerateConfig, generate
from smile_synth.errors import UserError
from smile_synth.atomic import write_json_atomic
from smile_synth.shards import DATASET, fingerprint, read_json

# GenerateConfig fields that say how and where to write, not what: they stay out of the spec
NOT_CONTENT = {"out", "workers", "rank", "world_size"}
BASE = GenerateConfig(n=2, out="unused", recipe=recipe("black+objects"), seed=3, frames=2, size=32, shard_size=2)


def leaves(value: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every scalar inside nested dicts and lists."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in leaves(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in leaves(v, (*path, i))]
    return [path]


def other(value: Any) -> Any:
    """A different value of the same kind."""
    if isinstance(value, bool) or value is None:
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    return f"{value}-other"


def changed(spec: dict, path: tuple) -> dict:
    new = copy.deepcopy(spec)
    holder = new
    for k in path[:-1]:
        holder = holder[k]
    holder[path[-1]] = other(holder[path[-1]])
    return new


@pytest.mark.parametrize("key", sorted(BASE.spec()))
def test_every_value_in_the_spec_changes_the_fingerprint(key):
    spec = BASE.spec()
    paths = [p for p in leaves(spec) if p[0] == key]
    assert paths, key
    for path in paths:                             # every setting, down to each recipe value
        assert fingerprint(changed(spec, path)) != fingerprint(spec), path


def test_the_spec_holds_every_content_setting_of_generate():
    fields = {f.name for f in dataclasses.fields(GenerateConfig)}
    annotated = dataclasses.replace(BASE, annotations=("flow",))
    assert set(annotated.spec()) == (fields - NOT_CONTENT) | {"format_version"}
    # annotations stay out of a plain dataset's spec, so datasets made before them keep their fingerprint
    assert set(BASE.spec()) == (fields - NOT_CONTENT - {"annotations"}) | {"format_version"}


@pytest.mark.parametrize("name,value", [("seed", 1), ("n", 3), ("frames", 3), ("size", 48), ("shard_size", 1),
                                        ("codec", "jpeg"), ("recipe", recipe("noise+objects")),
                                        ("annotations", ("flow",)), ("annotations", ("flow", "tracks"))])
def test_every_content_setting_changes_the_config_fingerprint(name, value):
    assert dataclasses.replace(BASE, **{name: value}).fingerprint != BASE.fingerprint


def test_write_side_settings_keep_the_fingerprint():
    assert dataclasses.replace(BASE, out="elsewhere", workers=2, rank=1, world_size=2).fingerprint == BASE.fingerprint


@pytest.fixture(scope="module")
def old_shard(tmp_path_factory):
    """A one-shard dataset (2 clips) made with BASE's seed."""
    out = tmp_path_factory.mktemp("old") / "data"
    generate(dataclasses.replace(BASE, out=str(out)), progress=False)
    return out


def test_a_sidecar_records_the_fingerprint_of_its_dataset_json(old_shard):
    assert read_json(old_shard / "shard-000000.json")["fingerprint"] == fingerprint(read_json(old_shard / DATASET))


@pytest.mark.parametrize("dataset_json", ["absent", "the new seed's", "the old seed's"])
def test_a_shard_of_another_seed_is_refused_whatever_dataset_json_says(old_shard, tmp_path, dataset_json):
    other_seed = dataclasses.replace(BASE, out=str(tmp_path / "mix"), seed=BASE.seed + 1)
    mix = tmp_path / "mix"
    mix.mkdir()
    for name in ("shard-000000.tar", "shard-000000.json"):
        shutil.copy(old_shard / name, mix)
    if dataset_json != "absent":
        write_json_atomic(mix / DATASET, (other_seed if dataset_json == "the new seed's" else BASE).spec())
    before = {p.name: p.read_bytes() for p in mix.iterdir() if p.is_file()}
    assert read_json(mix / "shard-000000.json")["fingerprint"] == BASE.fingerprint != other_seed.fingerprint
    with pytest.raises(UserError) as refused:
        generate(other_seed, progress=False)
    msg = str(refused.value)
    if dataset_json == "the old seed's":           # stopped by the dataset.json comparison
        assert "seed" in msg, msg
    else:                                          # only the sidecar's fingerprint can tell
        assert "shard-000000.tar" in msg and "another dataset" in msg, msg
    assert {p.name: p.read_bytes() for p in mix.iterdir() if p.is_file()} == before   # nothing adopted or written
