"""The prompt text (pure, table-tested) and its rendering to 8 kHz WAV files."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import wave
from pathlib import Path

import pytest

from screener import prompts
from screener.config import PROMPT_KEYS
from screener.errors import InputError
from screener.policy import Hours
from screener.prompts import PromptWords, after_hours_text, challenge_files, challenge_text

T = dt.time
WEEKDAYS_9_18 = {d: ((T(9), T(18)),) for d in range(5)}


@pytest.mark.parametrize(
    ("words", "code", "said"),
    [
        (PromptWords(), "37", "おつなぎするには、さん、なな、を押してください。"),
        (PromptWords(), "042", "おつなぎするには、ゼロ、よん、にー、を押してください。"),
        (
            PromptWords(greeting="お電話ありがとうございます。株式会社〇〇です。"),
            "25",
            "お電話ありがとうございます。株式会社〇〇です。おつなぎするには、にー、ごー、"
            "を押してください。",
        ),
    ],
)
def test_challenge_text_is_intro_digits_suffix(words: PromptWords, code: str, said: str) -> None:
    """The challenge reads in natural Japanese order: (greeting,) intro, the digits, suffix."""
    assert challenge_text(words, code) == said


def test_challenge_files_follow_the_same_order() -> None:
    """The dialplan plays the intro, one digit file per digit, then the suffix."""
    assert challenge_files("37") == (
        "screener/challenge-intro",
        "digits/3",
        "digits/7",
        "screener/challenge-suffix",
    )


@pytest.mark.parametrize(
    ("open_hours", "said"),
    [
        (WEEKDAYS_9_18, "本日の受付は終了しました。受付時間は平日9時から18時です。"),
        (
            {**WEEKDAYS_9_18, 5: ((T(10), T(12)),)},
            "本日の受付は終了しました。受付時間は平日9時から18時、土曜10時から12時です。",
        ),
        (
            {d: ((T(9), T(12)), (T(13), T(17, 30))) for d in range(6)},
            "本日の受付は終了しました。受付時間は月曜から土曜9時から12時と13時から17時30分です。",
        ),
        (
            {d: ((T(0), T.max),) for d in range(7)},
            "本日の受付は終了しました。受付時間は毎日0時から24時です。",
        ),
        (
            {0: ((T(9), T(18)),), 2: ((T(9), T(18)),)},
            "本日の受付は終了しました。受付時間は月曜・水曜9時から18時です。",
        ),
        ({}, "本日の受付は終了しました。"),
    ],
)
def test_after_hours_text_from_the_configured_hours(
    open_hours: dict[int, tuple[tuple[dt.time, dt.time], ...]], said: str
) -> None:
    """The after-hours message says the business hours as the configuration has them."""
    assert after_hours_text(PromptWords(), Hours(open=open_hours)) == said


def test_after_hours_wording_is_configurable() -> None:
    """The office's own wording takes the hours in place of {hours}."""
    words = PromptWords(after_hours_closed="営業時間外です。", after_hours_times="（{hours}）")
    assert (
        after_hours_text(words, Hours(open=WEEKDAYS_9_18)) == "営業時間外です。（平日9時から18時）"
    )


def test_prompt_texts_cover_every_file_the_dialplan_plays() -> None:
    """Every screener/<name> and digits 0-9 get a text; nothing is empty."""
    texts = prompts.prompt_texts(PromptWords(), Hours(open=WEEKDAYS_9_18))
    assert set(texts) == {f"screener/{n}" for n in prompts.PROMPT_NAMES} | {
        f"digits/{d}" for d in range(10)
    }
    assert all(t.strip() for t in texts.values())
    assert texts["screener/recording"] == "この通話は迷惑電話防止のため録音されます。"


def test_config_keys_are_the_words_fields() -> None:
    """[prompts.ja] accepts exactly the fields PromptWords has."""
    assert tuple(f.name for f in dataclasses.fields(PromptWords)) == PROMPT_KEYS


class FakeVoice:
    """A voice that renders a tone whose length depends on the text, and counts its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, text: str) -> tuple[list[float], int]:
        import numpy as np

        self.calls.append(text)
        n = 4800 * (1 + len(text) % 5)
        tone = 10000 * np.sin(np.arange(n) * 2 * np.pi * 440 / 48000)
        return list(np.concatenate([np.zeros(4800), tone, np.zeros(4800)])), 48000


@pytest.mark.slow  # seconds of waiting or rendering: the full suite runs it
def test_build_is_idempotent_and_rewrites_only_changed_text(tmp_path: Path) -> None:
    """A second build renders nothing; changing one text re-renders that file alone."""
    voice = FakeVoice()
    texts = {"screener/reject": "この電話はお受けできません。", "digits/1": "いち"}
    first = prompts.build(texts, tmp_path, synth=voice)
    assert sorted(first.written) == ["digits/1", "screener/reject"]
    mtime = (tmp_path / "ja/digits/1.wav").stat().st_mtime_ns
    again = prompts.build(texts, tmp_path, synth=voice)
    assert again.written == [] and sorted(again.unchanged) == ["digits/1", "screener/reject"]
    changed = prompts.build(
        {**texts, "screener/reject": "お受けできません。"}, tmp_path, synth=voice
    )
    assert changed.written == ["screener/reject"]
    assert (tmp_path / "ja/digits/1.wav").stat().st_mtime_ns == mtime
    assert len(voice.calls) == 3
    manifest = json.loads((tmp_path / "ja/screener" / prompts.MANIFEST).read_text())
    assert set(manifest) == {"digits/1", "screener/reject"}


@pytest.mark.slow
def test_build_keeps_a_file_it_did_not_make(tmp_path: Path) -> None:
    """An office's own recording in the same place is kept unless --force."""
    own = tmp_path / "ja/screener/reject.wav"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"the office's own recording")
    report = prompts.build({"screener/reject": "x"}, tmp_path, synth=FakeVoice())
    assert (
        report.foreign == ["screener/reject"] and own.read_bytes() == b"the office's own recording"
    )
    forced = prompts.build({"screener/reject": "x"}, tmp_path, force=True, synth=FakeVoice())
    assert forced.written == ["screener/reject"] and own.read_bytes()[:4] == b"RIFF"


def test_english_is_not_rendered(tmp_path: Path) -> None:
    """English stays on Asterisk's core sounds: asking to render it is a clear error."""
    with pytest.raises(InputError, match="core sounds"):
        prompts.build({"digits/1": "one"}, tmp_path, "en", synth=FakeVoice())


def test_to_phone_trims_and_resamples() -> None:
    """48 kHz speech padded with silence becomes 8 kHz PCM without the padding, never clipped."""
    voice = FakeVoice()
    samples, rate = voice("abc")  # 0.1 s silence, 0.4 s tone, 0.1 s silence
    pcm = prompts.to_phone(samples, rate)
    seconds = len(pcm) / 2 / prompts.RATE
    assert 0.44 < seconds < 0.46  # the tone and 25 ms either side


@pytest.mark.parametrize(
    ("setting", "value"),
    [("SPEED", 1.3), ("TRIM_LEVEL", 0.05), ("TRIM_PAD_SECONDS", 0.1), ("RENDER_VERSION", 99)],
)
def test_every_render_setting_is_in_the_manifest_hash(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: float
) -> None:
    """Changing how prompts are rendered changes their hash: the next build rewrites them."""
    before = prompts._digest("おつなぎします。")
    monkeypatch.setattr(prompts, setting, value)
    assert prompts._digest("おつなぎします。") != before


@pytest.mark.slow  # renders with scipy: the full suite runs it
def test_a_new_render_setting_rewrites_every_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build after the trim changed renders every prompt again, shorter."""
    texts = {"screener/reject": "この電話はお受けできません。", "digits/1": "いち"}
    prompts.build(texts, tmp_path, synth=FakeVoice())
    size = (tmp_path / "ja/digits/1.wav").stat().st_size
    monkeypatch.setattr(prompts, "TRIM_PAD_SECONDS", 0.0)
    again = prompts.build(texts, tmp_path, synth=FakeVoice())
    assert sorted(again.written) == ["digits/1", "screener/reject"]
    assert (tmp_path / "ja/digits/1.wav").stat().st_size == size - 2 * 2 * 200  # 25 ms each end


def wav_facts(path: Path) -> tuple[int, int, int, float, float]:
    """(rate, channels, sample width, seconds, RMS) of a WAV file."""
    import numpy as np

    with wave.open(str(path)) as w:
        frames = w.readframes(w.getnframes())
        facts = (
            w.getframerate(),
            w.getnchannels(),
            w.getsampwidth(),
            w.getnframes() / w.getframerate(),
        )
    rms = float(np.sqrt(np.mean(np.frombuffer(frames, "<i2").astype(float) ** 2)))
    return (*facts, rms)


@pytest.mark.slow
def test_every_default_prompt_renders_as_8khz_speech(tmp_path: Path) -> None:
    """The real voice renders each default prompt: 8 kHz 16-bit mono, audible, sane length."""
    texts = prompts.prompt_texts(PromptWords(), Hours(open=WEEKDAYS_9_18))
    report = prompts.build(texts, tmp_path)
    assert sorted(report.written) == sorted(texts)
    for name, text in texts.items():
        rate, channels, width, seconds, rms = wav_facts(tmp_path / "ja" / f"{name}.wav")
        assert (rate, channels, width) == (8000, 1, 2), name
        assert rms > 1000, f"{name} is (nearly) silent"
        # About 0.06-0.25 s per character of Japanese, with a floor for one-word digits.
        assert 0.2 < seconds < max(1.5, 0.25 * len(text)), (name, seconds)
