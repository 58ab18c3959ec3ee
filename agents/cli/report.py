"""`opsagent report`: recovery and service-level reports to hand over, signed, and their
verification; `report key` makes and shows the signing key."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from agents.cli.common import EXIT_USAGE, config_option, json_option, load, parse_time
from agents.cli.render import print_json

key_file_option = click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Signing key file (default: state_dir/report-signing.key).",
)
out_option = click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the report to FILE.html or FILE.json.",
)
until_option = click.option(
    "--until",
    default=None,
    help="End of the period, ISO 8601, UTC unless it names a zone (default: now);"
    " the period is --since before it.",
)


@click.group("report")
def report() -> None:
    """Recovery and service-level reports for auditors and clients, signed."""


def period(since: str, until: str | None) -> tuple[datetime, datetime]:
    from agents.units import parse_duration

    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    if window <= timedelta(0):
        raise click.BadParameter("must be a positive duration", param_hint="--since")
    try:
        end = parse_time(until) if until else datetime.now(UTC)
    except click.BadParameter as exc:
        raise click.BadParameter(exc.message, param_hint="--until") from None
    try:
        return end - window, end
    except OverflowError:
        raise click.BadParameter(
            "the period would start before year 1", param_hint="--until"
        ) from None


def check_out(out_file: Path | None) -> None:
    """Refuse an --out of another format before any work is done."""
    from agents.reports.files import FORMATS

    if out_file is not None and out_file.suffix.lower() not in FORMATS:
        raise click.BadParameter("takes a .json or .html file", param_hint="--out")


def sign_and_emit(
    doc: dict[str, Any],
    key_file: Path | None,
    default_key: Path,
    out_file: Path | None,
    as_json: bool,
) -> None:
    """Sign with the key (a missing default key: unsigned, with a warning), then write
    --out, print --json, or print the headline."""
    from agents.reports.document import without_surrogates
    from agents.reports.files import render
    from agents.reports.signing import load_key, sign

    doc = without_surrogates(doc)
    path = key_file or default_key
    if key_file is not None or path.exists():
        doc = sign(doc, load_key(path))
    else:
        click.echo(
            f"opsagent: warning: no signing key at {path} (`opsagent report key init`);"
            " the report is unsigned",
            err=True,
        )
    if out_file is not None:
        text = render(doc, out_file)
        out_file.write_bytes(text.encode("utf-8"))  # byte for byte what verify renders
        click.echo(f"{out_file}: {doc['headline']}", err=as_json)
    if as_json:
        print_json(doc)
    elif out_file is None:
        click.echo(doc["headline"])
        if doc.get("signature"):
            click.echo(f"signed by {doc['signature']['key_id']}; --out FILE or --json to keep it")


@report.command("recovery")
@config_option
@click.option("--since", default="90d", show_default=True, help="Length of the period.")
@until_option
@click.option("--source", default=None, help="Only this backup source.")
@out_option
@key_file_option
@json_option
@click.pass_context
def report_recovery(
    ctx: click.Context,
    config_file: Path | None,
    since: str,
    until: str | None,
    source: str | None,
    out_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> None:
    """Recovery evidence: every restore test, pack coverage, failures and their cases."""
    from agents.reports.gather import default_key_file, recovery_document

    start, end = period(since, until)
    check_out(out_file)
    config = load(ctx, config_file)
    doc = recovery_document(config, start, end, source)
    sign_and_emit(doc, key_file, default_key_file(config), out_file, as_json)


@report.command("sla")
@config_option
@click.option("--since", default="30d", show_default=True, help="Length of the period.")
@until_option
@click.option(
    "--label", "labels", multiple=True, help="Only hosts with label k=v (all must match)."
)
@click.option(
    "--inventory",
    "inventory_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Inventory for --label (default: $OPSAGENT_INVENTORY, then /etc/opsagent/inventory.yml).",
)
@out_option
@key_file_option
@json_option
@click.pass_context
def report_sla(
    ctx: click.Context,
    config_file: Path | None,
    since: str,
    until: str | None,
    labels: tuple[str, ...],
    inventory_file: Path | None,
    out_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> None:
    """Service levels per severity, the calendar used, breaches and their timelines."""
    from agents.reports.gather import default_key_file, parse_labels, sla_document

    start, end = period(since, until)
    check_out(out_file)
    wanted = parse_labels(labels)
    config = load(ctx, config_file)
    doc = sla_document(config, start, end, wanted, inventory_file)
    sign_and_emit(doc, key_file, default_key_file(config), out_file, as_json)


@report.group("key")
def report_key() -> None:
    """The key that signs reports (Ed25519)."""


def _key_path(ctx: click.Context, config_file: Path | None, key_file: Path | None) -> Path:
    if key_file is not None:
        return key_file
    from agents.reports.gather import default_key_file

    return default_key_file(load(ctx, config_file))


@report_key.command("init")
@config_option
@key_file_option
@click.option("--force", is_flag=True, help="Replace an existing key (old reports stay valid).")
@click.pass_context
def report_key_init(
    ctx: click.Context, config_file: Path | None, key_file: Path | None, force: bool
) -> None:
    """Create the signing key (mode 0600) and print its public key."""
    from agents.reports.signing import create_key, key_id, public_key_text, raw_public

    path = _key_path(ctx, config_file, key_file)
    key = create_key(path, force)
    click.echo(f"signing key written to {path} (mode 0600)")
    click.echo(f"key_id: {key_id(raw_public(key.public_key()))}")
    click.echo(f"public_key: {public_key_text(key)}")


@report_key.command("show")
@config_option
@key_file_option
@json_option
@click.pass_context
def report_key_show(
    ctx: click.Context, config_file: Path | None, key_file: Path | None, as_json: bool
) -> None:
    """Print the public key and its key_id, to give to whoever verifies reports."""
    from agents.reports.signing import key_id, load_key, public_key_text, raw_public

    path = _key_path(ctx, config_file, key_file)
    key = load_key(path)
    facts = {
        "key_file": str(path),
        "key_id": key_id(raw_public(key.public_key())),
        "public_key": public_key_text(key),
        "algorithm": "ed25519",
    }
    if as_json:
        print_json(facts)
        return
    click.echo(f"key_id: {facts['key_id']}")
    click.echo(f"public_key: {facts['public_key']}")


@report.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--public-key",
    default=None,
    help="The signer's public key (base64 as `report key show` prints it, or a file).",
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A signing key whose public key must have signed (default: none, the key the"
    " report carries, which proves no signer).",
)
@click.pass_context
def report_verify(
    ctx: click.Context, file: Path, public_key: str | None, key_file: Path | None
) -> None:
    """Check a report's signature (JSON or HTML): exit 0 valid, 1 changed or not signed."""
    from agents.reports.files import verify_file
    from agents.reports.signing import SigningError, load_key, parse_public_key, raw_public
    from agents.units import printable

    expected = None
    try:
        if public_key is not None:
            given = Path(public_key)
            text = given.read_text() if given.is_file() else public_key
            expected = parse_public_key(text)
        elif key_file is not None:
            expected = raw_public(load_key(key_file).public_key())
    except SigningError as exc:
        click.echo(f"opsagent: {exc}", err=True)
        ctx.exit(EXIT_USAGE)
    key, doc = verify_file(file, expected)
    how = "" if expected is not None else " (key taken from the report: pass --public-key)"
    headline = printable(str(doc.get("headline", "")))  # signed, but by whom: no escapes
    click.echo(f"valid, signed by key_id {key}{how}: {headline}")
    sys.stdout.flush()
