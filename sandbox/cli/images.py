"""``images``, ``history``, ``rmi``, ``tag`` and ``image build-base``."""

from __future__ import annotations

import time

import click
from rich.console import Console

from sandbox.cli.connect import connect
from sandbox.cli.output import console, table
from sandbox.units import ago, human_size


@click.command("images")
@click.option("-q", "--quiet", is_flag=True, help="Only IDs.")
def images_command(quiet: bool) -> None:
    """List images."""
    with connect() as client:
        found = client.images()
    t = table("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")
    for image in found:
        short_id = image["Id"].removeprefix("sha256:")[:12]
        if quiet:
            click.echo(short_id)
            continue
        for tag in image["RepoTags"] or ["<none>:<none>"]:
            repo, _, name = tag.rpartition(":")
            t.add_row(repo, name, short_id, f"{ago(image['Created'])} ago",
                      human_size(image["Size"]))  # fmt: skip
    if not quiet:
        console.print(t)


@click.command("history")
@click.option("--no-trunc", is_flag=True, help="Show whole commands.")
@click.argument("image")
def history_command(image: str, no_trunc: bool) -> None:
    """Show an image's layers, newest first: what made each and its size."""
    with connect() as client:
        rows = client.history(image)
    t = table("IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT")
    now = time.time()
    for row in rows:
        created_by = row["CreatedBy"]
        if not no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        ident = row["Id"].removeprefix("sha256:")[:12] if row["Id"] != "<missing>" else "<missing>"
        t.add_row(ident, f"{ago(row['Created'], now)} ago", created_by,
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
    with connect() as client:
        for ref in images:
            for item in client.remove_image(ref, force):
                for key, value in item.items():
                    click.echo(f"{key}: {value}")


@click.command("tag")
@click.argument("source")
@click.argument("target")
def tag_command(source: str, target: str) -> None:
    """Give the image SOURCE another name TARGET."""
    with connect() as client:
        client.tag(source, target)


@click.group("image")
def image_group() -> None:
    """Manage images."""


@image_group.command("build-base")
def build_base_command() -> None:
    """(Re)build the default image `base` from this host's shell tools."""
    with connect() as client:
        built = client.build_base()
    short_id = built["Id"].removeprefix("sha256:")[:12]
    console.print(
        f"built base:latest ({short_id}) in {built['Seconds']:.1f} s, "
        f"{human_size(built['Size'])}: {built['CreatedBy']}",
        markup=False,
    )


COMMANDS = [images_command, history_command, rmi_command, tag_command, image_group]
