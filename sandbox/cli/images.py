"""``images``, ``history``, ``rmi``, ``tag`` and ``image build-base``."""

from __future__ import annotations

import time

import click
from rich.console import Console

from sandbox.cli.output import console, table
from sandbox.engine import Engine, views
from sandbox.units import human_size


@click.command("images")
@click.option("-q", "--quiet", is_flag=True, help="Only IDs.")
def images_command(quiet: bool) -> None:
    """List images."""
    engine = Engine()
    t = table("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")
    for image in engine.store.images.list():
        if quiet:
            click.echo(image.short_id)
            continue
        size = human_size(views.image_size(engine.store, image))
        created = views.image_summary(engine.store, image)["Created"]
        for tag in image.tags or ["<none>:<none>"]:
            repo, _, name = tag.rpartition(":")
            t.add_row(repo, name, image.short_id, f"{views.ago(created)} ago", size)
    if not quiet:
        console.print(t)


@click.command("history")
@click.option("--no-trunc", is_flag=True, help="Show whole commands.")
@click.argument("image")
def history_command(image: str, no_trunc: bool) -> None:
    """Show an image's layers, newest first: what made each and its size."""
    engine = Engine()
    img = engine.image(image)
    t = table("IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT")
    now = time.time()
    for row in views.image_history(engine.store, img):
        created_by = row["CreatedBy"]
        if not no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        ident = row["Id"].removeprefix("sha256:")[:12] if row["Id"] != "<missing>" else "<missing>"
        t.add_row(ident, f"{views.ago(row['Created'], now)} ago", created_by,
                  human_size(row["Size"]), row["Comment"])  # fmt: skip
    out = console
    if no_trunc:
        # Whole commands may be wider than the terminal: rich would squeeze the
        # other columns to "07…" instead; print long lines, as docker does.
        width = Console(width=1 << 20).measure(t).maximum
        if width > console.width:
            out = Console(highlight=False, soft_wrap=True, width=width)
    out.print(t)


@click.command("rmi")
@click.option("-f", "--force", is_flag=True, help="Remove even if containers use it.")
@click.argument("images", nargs=-1, required=True)
def rmi_command(images: tuple[str, ...], force: bool) -> None:
    """Remove images (untag; delete once no tag is left)."""
    engine = Engine()
    for ref in images:
        for item in engine.remove_image(ref, force=force):
            for key, value in item.items():
                click.echo(f"{key}: {value}")


@click.command("tag")
@click.argument("source")
@click.argument("target")
def tag_command(source: str, target: str) -> None:
    """Give the image SOURCE another name TARGET."""
    engine = Engine()
    engine.store.images.tag(engine.image(source).id, target)


@click.group("image")
def image_group() -> None:
    """Manage images."""


@image_group.command("build-base")
def build_base_command() -> None:
    """(Re)build the default image `base` from this host's shell tools."""
    engine = Engine()
    started = time.perf_counter()
    image = engine.build_base()
    size = views.image_size(engine.store, image)
    console.print(
        f"built base:latest ({image.short_id}) in {time.perf_counter() - started:.1f} s, "
        f"{human_size(size)}: {image.history[-1]['created_by']}"
    )


COMMANDS = [images_command, history_command, rmi_command, tag_command, image_group]
