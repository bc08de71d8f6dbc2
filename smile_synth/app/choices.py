"""click choices whose names come from a registry, read when first needed (shared by the CLI's commands)."""
from __future__ import annotations

import importlib

import click


def resolve(where: str):
    """The object at "module:NAME", imported now."""
    module, name = where.split(":")
    return getattr(importlib.import_module(module), name)


class RegistryChoice(click.Choice):
    """click.Choice over the names of a registry ("module:NAME", a dict of name -> builder), imported
    when first needed, so a new registration shows up in the CLI with no edit here."""

    def __init__(self, where: str, extra: tuple[str, ...] = ()):
        self.where, self.extra = where, extra
        super().__init__((), case_sensitive=True)

    @property
    def choices(self):
        return (*self.extra, *resolve(self.where))

    @choices.setter
    def choices(self, value):   # click.Choice.__init__ assigns it; the registry is the source
        pass


PRESET_CHOICE = RegistryChoice("training.models:PRESETS")   # the student sizes, for every --preset
