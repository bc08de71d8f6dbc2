"""One home per concept: the CLI's choices, config validation and --help all read the registries and
the config dataclasses, so a new trajectory, target, mask, probe or task is one function plus one
registration, and a default is written once."""
from __future__ import annotations

import click
import numpy as np
import pytest
from conftest import run_cli

from eval import probes, tasks
from smile_synth.app.cli import ConfigOption, RegistryChoice, cli, config_default
from training import masking, targets
from training.config import PretrainConfig


def options_of(command: str) -> dict[str, click.Option]:
    return {p.name: p for p in cli.commands[command].params if isinstance(p, click.Option)}


@pytest.mark.parametrize(("command", "option", "registry"), [
    ("pretrain", "target", targets.TARGETS),
    ("pretrain", "mask", ("auto", *masking.MASKS)),
    ("eval", "task", {"flow": None, **tasks.TASKS}),              # the flow task renders its own clips (eval/flow_probe.py)
    ("eval", "probe", probes.PROBES),
    ("compare", "tasks", {"flow": None, **tasks.TASKS}),
    ("compare", "probes", {"finetune": None, **probes.PROBES}),   # end-to-end fine-tuning beside the feature probes
    ("finetune", "task", tasks.TASKS),
])
def test_cli_choices_are_the_registry(command, option, registry):
    choice = options_of(command)[option].type
    assert isinstance(choice, RegistryChoice)
    assert list(choice.choices) == list(registry)


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_help_shows_the_config_defaults(command):
    ctx = click.Context(cli.commands[command])
    for option in options_of(command).values():
        if isinstance(option, ConfigOption):
            value = config_default(option.config, option.field)
            _, text = option.get_help_record(ctx)
            if value not in (None, False):
                shown = ", ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
                assert f"[default: {shown}]" in text, (command, option.name, text)


def test_a_registered_probe_is_offered_and_accepted(monkeypatch, tmp_path):
    monkeypatch.setitem(probes.PROBES, "centroid", lambda tx, ty, sx, n, groups=None, seed=0: np.zeros((len(sx), n)))
    assert "centroid" in options_of("eval")["probe"].type.choices
    assert "centroid" in run_cli("eval", "--help").output
    from eval.compare import CompareConfig
    CompareConfig(probes=("centroid",), data="x", runs=(("a", str(tmp_path)),)).validate()


def test_a_registered_task_is_offered(monkeypatch):
    monkeypatch.setitem(tasks.TASKS, "still", tasks.Task("still", lambda *a: [], default_stride=3))
    assert "still" in options_of("compare")["tasks"].type.choices
    assert "still 3" in run_cli("eval", "--help").output.replace("\n", " ").replace("  ", " ")


def test_a_registered_target_and_mask_validate(monkeypatch):
    monkeypatch.setitem(targets.TARGETS, "zeros", lambda *a, **k: None)
    monkeypatch.setitem(masking.MASKS, "random", lambda *a, **k: None)
    PretrainConfig(target="zeros", mask="random", steps=1).validate()
    assert "zeros" in options_of("pretrain")["target"].type.choices
    assert "random" in options_of("pretrain")["mask"].type.choices
