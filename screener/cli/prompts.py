"""``screener prompts``: render the prompts callers hear, offline."""

from __future__ import annotations

from pathlib import Path

import click

from screener.cli.common import _config, _print_json, common_options
from screener.cli.root import main


@main.group("prompts")
def prompts_group() -> None:
    """The prompts callers hear, rendered from the configured text."""


@prompts_group.command(
    "build",
    epilog='Japanese voice: HTS voice "Mei" (CC-BY 3.0), Nagoya Institute of Technology, '
    "rendered with Open JTalk (pyopenjtalk-plus; pip install 'screener[voice]').",
)
@click.option(
    "--lang",
    type=click.Choice(["ja", "en"]),
    default="ja",
    show_default=True,
    help="Language to render (en: nothing to render, Asterisk's core sounds are used).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/usr/share/asterisk/sounds"),
    show_default=True,
    help="Asterisk's sounds folder; files go to OUT/<lang>/screener/ and OUT/<lang>/digits/.",
)
@click.option("--force", is_flag=True, help="Also replace files screener did not make.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@common_options
def prompts_build(
    lang: str,
    out: Path,
    force: bool,
    as_json: bool,
    db_path: Path | None,
    config_path: Path | None,
) -> None:
    """Render every prompt the dialplan plays, offline, from [prompts.<lang>] in the config.

    8 kHz 16-bit mono WAV. A prompt whose text did not change is not rewritten.
    """
    from screener import prompts  # numpy and scipy load only for this command

    config = _config(db_path, config_path)
    if lang not in prompts.RENDERED:
        click.echo(f"{lang}: nothing to render; the dialplan plays Asterisk's core sounds")
        return
    words = prompts.words_for(config.prompt_words.get(lang))
    texts = prompts.prompt_texts(words, config.policy.hours)
    report = prompts.build(texts, out, lang, force=force)
    if as_json:
        _print_json(report.as_dict())
        return
    click.echo(
        f"{report.folder}: {len(report.written)} written, {len(report.unchanged)} unchanged"
        f" ({report.bytes / 1024:.0f} KiB, {report.audio_seconds:.1f} s of speech)"
        f" in {report.seconds:.2f} s"
    )
    for name in report.foreign:
        click.echo(f"kept {name}: not made by screener (--force replaces it)", err=True)
    click.echo(prompts.VOICE_ATTRIBUTION)
