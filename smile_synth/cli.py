"""The `smile-synth` command line."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from .errors import UserError


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    try:
        return int(v) if v is not None else default
    except ValueError:
        raise UserError(f"environment variable {name}={v!r} is not a whole number") from None


def _load_recipe(recipe: str, overrides: tuple[str, ...]):
    from generators.recipes import get_recipe

    return get_recipe(recipe, overrides)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", is_flag=True, help="More log output.")
def cli(verbose: bool) -> None:
    """smile-synth: synthetic training videos and SMILE-style video pretraining."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


@cli.command()
def recipes() -> None:
    """List the named recipes."""
    from generators.recipes import describe_recipes

    for name, version, desc in describe_recipes():
        click.echo(f"{name:17s} v{version}  {desc}")


recipe_option = click.option("--recipe", "recipe", default="black+objects", show_default=True,
                             help="Recipe name (see `smile-synth recipes`) or a .yaml/.json file with `base:` and overrides.")
set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a recipe setting, e.g. --set objects.count=[1,3] (repeatable).")


@cli.command()
@click.option("--n", type=int, required=True, help="Number of clips.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output folder for shards.")
@recipe_option
@set_option
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--frames", type=int, default=16, show_default=True)
@click.option("--size", type=int, default=224, show_default=True, help="Frame side in pixels (multiple of 16).")
@click.option("--workers", type=int, default=None, help="Render processes [default: all cores].")
@click.option("--shard-size", type=int, default=1000, show_default=True, help="Clips per shard.")
@click.option("--rank", type=int, default=None, help="This machine's rank [default: $RANK or 0].")
@click.option("--world-size", type=int, default=None, help="Number of machines [default: $WORLD_SIZE or 1].")
@click.option("--codec", type=click.Choice(["h264", "jpeg"]), default="h264", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def generate(n, out, recipe, overrides, seed, frames, size, workers, shard_size, rank, world_size, codec, quiet) -> None:
    """Render N clips into WebDataset shards in OUT (resumable; split across ranks)."""
    from .generate import GenerateConfig, generate as run

    cfg = GenerateConfig(n=n, out=out, recipe=_load_recipe(recipe, overrides), seed=seed, frames=frames, size=size,
                         workers=_default_workers() if workers is None else workers, shard_size=shard_size,
                         rank=_env_int("RANK", 0) if rank is None else rank,
                         world_size=_env_int("WORLD_SIZE", 1) if world_size is None else world_size, codec=codec)
    cfg.validate()
    m = run(cfg, progress=not quiet)
    state = "complete" if m["complete"] else f"{m['num_shards']}/{m['expected_shards']} shards (other ranks pending)"
    click.echo(f"{out}: {m['clips']} clips, {m['bytes'] / 2**20:.1f} MiB, "
               f"{m['bytes'] / max(m['clips'], 1) / 1024:.1f} KiB/clip, {state}")


@cli.command()
@click.option("--recipe", default=None, help="Render clips of this recipe (name or file).")
@set_option
@click.option("--shards", type=click.Path(exists=True), default=None, help="Or read clips from this shard folder/file.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Contact sheet .png")
@click.option("--n", type=int, default=8, show_default=True, help="Number of clips.")
@click.option("--gif", type=click.Path(dir_okay=False), default=None, help="Also write an animated .gif.")
@click.option("--overlay-masks", is_flag=True, help="Tint each object's visible mask and draw its box.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--frames", type=int, default=16, show_default=True)
@click.option("--size", type=int, default=224, show_default=True)
def preview(recipe, overrides, shards, out, n, gif, overlay_masks, seed, frames, size) -> None:
    """Write a contact sheet (and optionally a GIF) of a recipe or of shards."""
    import itertools

    from .preview import animated_grid, contact_sheet, save_gif, save_png

    if (recipe is None) == (shards is None):
        raise UserError("give exactly one of --recipe NAME or --shards DIR")
    if n < 1:
        raise UserError(f"--n {n} must be >= 1")
    for p in (out, gif):
        if p and not Path(p).resolve().parent.is_dir():
            raise UserError(f"folder of {p} does not exist; create it or choose another path")
    if recipe is not None:
        from generators import render_clip

        r = _load_recipe(recipe, overrides)
        clips = [render_clip(r, seed, i, frames, size) for i in range(n)]
    else:
        from .shards import iter_clips

        try:
            clips = list(itertools.islice(iter_clips(shards), n))
        except ValueError as e:
            raise UserError(f"cannot decode a clip in {shards}: {e}; run `smile-synth inspect {shards} --verify`") from None
        if not clips:
            raise UserError(f"{shards} holds no clips; generate some with `smile-synth generate`")
    save_png(contact_sheet(clips, masks=overlay_masks), out)
    click.echo(f"wrote {out} ({len(clips)} clips)")
    if gif:
        save_gif(animated_grid(clips, masks=overlay_masks), gif)
        click.echo(f"wrote {gif}")


@cli.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--verify", is_flag=True, help="Decode every sample; exit non-zero if any is corrupt.")
def inspect(path, verify) -> None:
    """Counts, sizes and histograms of a shard folder; --verify decodes everything."""
    from .inspect import inspect as run

    rep = run(path, verify=verify, progress=sys.stderr.isatty())
    for line in rep.lines():
        click.echo(line)
    if rep.shards == 0:
        raise UserError(f"{path} holds no shard-*.tar files")
    if verify:
        bad = len(rep.corrupt) + len(rep.missing) + len(rep.duplicates) + len(rep.failed)
        if bad:
            click.echo(f"verify: FAILED ({len(rep.corrupt)} corrupt, {len(rep.missing)} missing, "
                       f"{len(rep.failed)} failed, {len(rep.duplicates)} duplicate)")
            sys.exit(1)
        click.echo(f"verify: OK, all {rep.clips} clips decode")


def main() -> None:
    cli(prog_name="smile-synth")


if __name__ == "__main__":
    main()
