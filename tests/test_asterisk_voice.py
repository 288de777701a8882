"""Static checks of the dialplan's prompts, language and recording (asterisk-conf/)."""

from __future__ import annotations

import re

from screener.prompts import PROMPT_NAMES
from tests.test_asterisk_conf import CONF, dialplan, section

GLOBALS = section(CONF / "extensions.conf", "globals")


def prompt_keys(lang: str) -> set[str]:
    return {k.split("_", 2)[2] for k in GLOBALS if k.startswith(f"PROMPT_{lang}_")}


def test_every_language_names_every_prompt() -> None:
    """ja and en define the same PROMPT_<lang>_<name> set, and every one the dialplan says."""
    used = set(re.findall(r"screen-say,s,1\((\w+)\)", CONF.joinpath("extensions.conf").read_text()))
    used |= {"intro", "suffix", "reject", "withheld", "afterhours"}  # via variables
    assert prompt_keys("ja") == prompt_keys("en")
    assert used <= prompt_keys("ja"), used - prompt_keys("ja")
    assert {"VOICEMAIL_OPTIONS_ja", "VOICEMAIL_OPTIONS_en"} <= set(GLOBALS)


def test_japanese_prompts_are_the_files_prompts_build_renders() -> None:
    """Every PROMPT_ja_* is screener/<name> for a name `screener prompts build` writes."""
    files = {GLOBALS[f"PROMPT_ja_{k}"] for k in prompt_keys("ja")}
    assert files == {f"screener/{n}" for n in PROMPT_NAMES}


def test_every_route_sets_the_language_before_it_plays() -> None:
    """In each route body, Gosub(screen-language) comes before any Playback, Read or prompt."""
    plan = dialplan()
    # route-staff plays nothing itself; screen-record (its warning) sets the language first.
    for route in ("challenge", "voicemail", "reject", "record"):
        lines = plan[f"route-{route}" if route != "record" else "screen-record"]
        first_language = next(i for i, x in enumerate(lines) if "screen-language" in x)
        plays = [
            i
            for i, x in enumerate(lines)
            if re.search(r"Playback|Read\(|screen-say|screen-record,|VoiceMail\(", x)
        ]
        assert plays and first_language < min(plays), route
    assert "Set(CHANNEL(language)=${SCREEN_LANG})" in "\n".join(plan["screen-language"])


def test_recording_starts_before_the_warning_and_is_reported() -> None:
    """screen-record: MixMonitor, then ScreenRecording started, then the spoken warning."""
    lines = dialplan()["screen-record"]
    order = [
        next(i for i, x in enumerate(lines) if needle in x)
        for needle in ("MixMonitor(", "ScreenRecording,Status: started", "1(recording)")
    ]
    assert order == sorted(order)
    assert any("ScreenRecording,Status: done" in x for x in dialplan()["screen-record-hangup"])
