"""The words callers hear, as text, and their rendering to sound files Asterisk plays.

Two halves, the usual way round:

- pure text builders (``prompt_texts``, ``challenge_text``, ``after_hours_text``): the wording
  comes from the configuration (``[prompts.ja]``), the after-hours message from the configured
  business hours; table-tested, no I/O;
- ``build(...)``: renders each text offline with Open JTalk (the ``pyopenjtalk-plus`` wheel,
  optional extra ``screener[voice]``) to 8 kHz 16-bit mono WAV under
  ``DIR/<lang>/screener/<name>.wav`` and ``DIR/<lang>/digits/<n>.wav``, where Asterisk's
  ``Playback`` and ``SayDigits`` find them once the channel's language is set. A manifest of
  text hashes makes it idempotent: a prompt whose text did not change is not rewritten.

English needs nothing rendered: the dialplan plays Asterisk's core sounds for it.

Voice: HTS voice "Mei" (CC-BY 3.0, Nagoya Institute of Technology), shipped inside the
pyopenjtalk-plus wheel.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import time
import warnings
import wave
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from screener.errors import InputError, ScreenerError
from screener.policy import Hours

LANGUAGES = ("ja", "en")
# Languages whose prompts are rendered here; the others use Asterisk's core sounds.
RENDERED = ("ja",)
DEFAULT_SOUNDS_DIR = Path("/usr/share/asterisk/sounds")
RATE = 8000  # what a narrowband phone call carries; Asterisk plays it without transcoding
MANIFEST = "screener-manifest.json"
# Bump when the rendering itself changes in a way the settings below do not say (level,
# filter): every file is then rewritten. The settings are in each prompt's hash too.
RENDER_VERSION = 2
# Open JTalk's speech rate (1.0 is its own): a little brisker, as telephone prompts are, and
# still natural; every prompt is about 8 % shorter.
SPEED = 1.1
# Open JTalk pads each rendering with about 0.2 s of silence before and 0.35 s after the
# speech. Everything quieter than TRIM_LEVEL of the peak at either end is cut, keeping
# TRIM_PAD_SECONDS of it so a soft onset or a devoiced final "su" is not clipped: across the
# intro, each digit, the suffix and the thank-you, that silence would add up to seconds.
TRIM_LEVEL = 0.02
TRIM_PAD_SECONDS = 0.025
VOICE_ATTRIBUTION = (
    'Japanese voice: HTS voice "Mei" (CC-BY 3.0), Nagoya Institute of Technology, '
    "rendered with Open JTalk (pyopenjtalk-plus)."
)

# Telephone readings: one-mora digits are lengthened (にー, ごー) as Japanese speakers do when
# reading numbers out on the phone, so each is heard clearly.
DIGIT_READINGS_JA = (
    "ゼロ",
    "いち",
    "にー",
    "さん",
    "よん",
    "ごー",
    "ろく",
    "なな",
    "はち",
    "きゅう",
)
WEEKDAY_NAMES_JA = ("月曜", "火曜", "水曜", "木曜", "金曜", "土曜", "日曜")


class PromptsError(ScreenerError):
    """Prompts cannot be rendered (no voice installed, folder not writable)."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class PromptWords:
    """The office's wording for each prompt (``[prompts.ja]``); defaults are the shipped ones."""

    greeting: str = ""  # e.g. 「お電話ありがとうございます。株式会社〇〇です。」, before the intro
    challenge_intro: str = "おつなぎするには、"
    challenge_suffix: str = "を押してください。"
    challenge_retry: str = "番号が違います。もう一度お願いします。"
    # 「おつなぎします」: polite, says what happens next, and 0.3 s shorter than
    # 「ありがとうございます」 (which an office may put back): staff ring sooner.
    challenge_thanks: str = "おつなぎします。"
    withheld: str = "恐れ入りますが、電話番号を通知しておかけ直しください。"
    reject: str = "この電話はお受けできません。"
    voicemail: str = (
        "ただいま電話に出ることができません。発信音のあとに、お名前とご用件をお話しください。"
    )
    after_hours_closed: str = "本日の受付は終了しました。"
    # {hours} is replaced by the business hours in words (「平日9時から18時」).
    after_hours_times: str = "受付時間は{hours}です。"
    recording: str = "この通話は迷惑電話防止のため録音されます。"
    # Announce screening: the caller says who it is; the staff phone hears it, then the menu.
    announce: str = "発信音のあとに、お名前とご用件をお話しください。"
    announce_intro: str = "次の方からお電話です。"
    announce_menu: str = (
        "おつなぎするには1、留守番電話には2、着信拒否には3、今後も許可するには4を押してください。"
    )
    # What a staff phone hears after blocking a caller (*0 during the call, or 3 above).
    call_blocked: str = "着信拒否に登録しました。"
    digits: tuple[str, ...] = DIGIT_READINGS_JA
    # What a staff phone hears after a feature code (*30 to *34), by result.
    staff_blocked: str = "着信拒否に登録しました。"
    staff_allowed: str = "着信許可に登録しました。"
    staff_removed: str = "登録を解除しました。"
    staff_undone: str = "直前の変更を取り消しました。"
    staff_notlisted: str = "その番号は登録されていません。"
    staff_nocaller: str = "登録できる着信がありません。"
    staff_withheld: str = (
        "最後の着信は番号非通知のため、登録できません。"
        "非通知の着信には、確認番号の入力か、番号を通知してのおかけ直しをお願いしています。"
    )
    staff_invalid: str = "番号が正しくありません。"
    staff_nothing: str = "取り消せる変更はありません。"
    staff_changed: str = "その番号は、その後ほかで変更されたため、取り消せません。"
    staff_failed: str = "登録できませんでした。しばらくしてから、もう一度お試しください。"


WORD_KEYS = tuple(f.name for f in dataclasses.fields(PromptWords))

# The feature-code results a staff phone hears (screener.featurecodes.Result values).
STAFF_RESULTS = (
    "blocked",
    "allowed",
    "removed",
    "undone",
    "notlisted",
    "nocaller",
    "withheld",
    "invalid",
    "nothing",
    "changed",
    "failed",
)

# The files the dialplan plays, by name (asterisk-conf/extensions.conf, PROMPT_ja_* globals).
PROMPT_NAMES = (
    "challenge-intro",
    "challenge-suffix",
    "challenge-retry",
    "challenge-thanks",
    "withheld",
    "reject",
    "voicemail",
    "after-hours",
    "recording",
    *(f"staff-{r}" for r in STAFF_RESULTS),
    "announce",
    "announce-intro",
    "announce-menu",
    "call-blocked",
)


def _clock(t: dt.time) -> str:
    """「9時」, 「9時30分」, 「24時」 for a window's end at midnight."""
    if t == dt.time.max:
        return "24時"
    return f"{t.hour}時" + (f"{t.minute}分" if t.minute else "")


def _days(days: Sequence[int]) -> str:
    """Weekdays in words: 平日, 土日, 毎日, 月曜から土曜, 月曜・水曜."""
    picked = sorted(set(days))
    named = {
        (0, 1, 2, 3, 4): "平日",
        (5, 6): "土日",
        (0, 1, 2, 3, 4, 5, 6): "毎日",
    }
    if tuple(picked) in named:
        return named[tuple(picked)]
    if len(picked) >= 3 and picked == list(range(picked[0], picked[-1] + 1)):
        return f"{WEEKDAY_NAMES_JA[picked[0]]}から{WEEKDAY_NAMES_JA[picked[-1]]}"
    return "・".join(WEEKDAY_NAMES_JA[d] for d in picked)


def hours_in_words(hours: Hours) -> str:
    """The business hours as said on the phone: 「平日9時から18時、土曜10時から12時」."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for day in range(7):
        windows = hours.open.get(day, ())
        if windows:
            spans = tuple(f"{_clock(a)}から{_clock(b)}" for a, b in windows)
            groups.setdefault(spans, []).append(day)
    parts = [f"{_days(days)}{'と'.join(spans)}" for spans, days in groups.items()]
    return "、".join(parts)


def after_hours_text(words: PromptWords, hours: Hours) -> str:
    """「本日の受付は終了しました。受付時間は平日9時から18時です。」 from the configured hours."""
    said = hours_in_words(hours)
    if not said:
        return words.after_hours_closed
    return words.after_hours_closed + words.after_hours_times.replace("{hours}", said)


def challenge_text(words: PromptWords, code: str) -> str:
    """What a caller hears for ``code``: greeting, intro, the digits, then the suffix."""
    spoken = "".join(f"{words.digits[int(d)]}、" for d in code)
    return f"{words.greeting}{words.challenge_intro}{spoken}{words.challenge_suffix}"


def challenge_files(code: str) -> tuple[str, ...]:
    """The sound files the dialplan plays for ``code``, in order (intro, digits, suffix)."""
    return (
        "screener/challenge-intro",
        *(f"digits/{d}" for d in code),
        "screener/challenge-suffix",
    )


def prompt_texts(words: PromptWords, hours: Hours) -> dict[str, str]:
    """Every file to render, by its path under ``<lang>/`` without extension."""
    texts = {
        "screener/challenge-intro": words.greeting + words.challenge_intro,
        "screener/challenge-suffix": words.challenge_suffix,
        "screener/challenge-retry": words.challenge_retry,
        "screener/challenge-thanks": words.challenge_thanks,
        "screener/withheld": words.withheld,
        "screener/reject": words.reject,
        "screener/voicemail": words.voicemail,
        "screener/after-hours": after_hours_text(words, hours),
        "screener/recording": words.recording,
        "screener/announce": words.announce,
        "screener/announce-intro": words.announce_intro,
        "screener/announce-menu": words.announce_menu,
        "screener/call-blocked": words.call_blocked,
    }
    texts.update({f"screener/staff-{r}": getattr(words, f"staff_{r}") for r in STAFF_RESULTS})
    texts.update({f"digits/{n}": reading for n, reading in enumerate(words.digits)})
    return texts


# ---- rendering -------------------------------------------------------------------------------

Synth = Callable[[str], tuple[Any, int]]  # text -> (float samples at int16 scale, rate)


def _voice() -> Synth:
    try:
        # It prints a notice about an optional accent model on stdout at import: keep our
        # stdout (--json) clean.
        with contextlib.redirect_stdout(io.StringIO()):
            import pyopenjtalk
    except ImportError as exc:
        raise PromptsError(
            "Japanese prompts need the voice: pip install 'screener[voice]' (pyopenjtalk-plus)"
        ) from exc

    def synth(text: str) -> tuple[Any, int]:
        # pyopenjtalk-plus calls a SudachiPy API that warns it is deprecated: not ours to fix.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            samples, rate = pyopenjtalk.tts(text, speed=SPEED)
        return samples, int(rate)

    return synth


def to_phone(samples: Any, rate: int) -> bytes:
    """Speech at any rate → 8 kHz 16-bit mono PCM: silence trimmed, level set, resampled.

    Resampled with a polyphase filter (scipy's ``resample_poly``, which low-passes before it
    decimates) so the 48 kHz voice does not alias into the phone band.
    """
    import numpy as np
    from scipy.signal import resample_poly

    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        raise PromptsError("the voice rendered no audio")
    # Keep the speech and TRIM_PAD_SECONDS either side: Open JTalk pads with long silence,
    # which would only slow the caller down.
    loud = np.flatnonzero(np.abs(x) > TRIM_LEVEL * np.max(np.abs(x)))
    if loud.size:
        pad = int(TRIM_PAD_SECONDS * rate)
        x = x[max(0, loud[0] - pad) : loud[-1] + pad]
    from math import gcd

    g = gcd(RATE, rate)
    y = resample_poly(x, RATE // g, rate // g)
    peak = float(np.max(np.abs(y))) or 1.0
    y = y * (0.7 * 32767 / peak)  # about -3 dBFS: loud enough, never clipped
    pcm: bytes = np.clip(np.round(y), -32768, 32767).astype("<i2").tobytes()
    return pcm


def _folder(path: Path) -> None:
    """Make the folder (and parents) readable by Asterisk's user, whatever our umask."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir()
        os.chmod(folder, 0o755)  # noqa: S103  # Asterisk (another user) reads prompts here


def write_wav(path: Path, pcm: bytes) -> None:
    """Write 8 kHz 16-bit mono WAV atomically (a half-written prompt is never played)."""
    _folder(path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with wave.open(str(tmp), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(RATE)
            out.writeframes(pcm)
        os.chmod(tmp, 0o644)  # Asterisk runs as its own user and must read it
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _digest(text: str) -> str:
    """The manifest's hash of a prompt: its text and every setting its rendering depends on."""
    settings = f"{RENDER_VERSION}\0{RATE}\0{SPEED}\0{TRIM_LEVEL}\0{TRIM_PAD_SECONDS}"
    return hashlib.sha256(f"{settings}\0{text}".encode()).hexdigest()


@dataclass
class BuildReport:
    """What ``build`` did: files written, kept unchanged, or left alone, and how long it took."""

    lang: str
    folder: Path
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)  # files screener did not make: kept
    seconds: float = 0.0
    bytes: int = 0
    audio_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``screener prompts build --json``."""
        return {
            "lang": self.lang,
            "folder": str(self.folder),
            "written": self.written,
            "unchanged": self.unchanged,
            "kept_foreign": self.foreign,
            "render_seconds": round(self.seconds, 3),
            "bytes": self.bytes,
            "audio_seconds": round(self.audio_seconds, 3),
        }


def _read_manifest(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}


def build(
    texts: Mapping[str, str],
    out: Path,
    lang: str = "ja",
    *,
    force: bool = False,
    synth: Synth | None = None,
) -> BuildReport:
    """Render ``texts`` (``prompt_texts``) into ``out/<lang>/``; skip what did not change.

    A file already there that screener's manifest does not list (an office's own recording)
    is kept unless ``force``.
    """
    if lang not in RENDERED:
        raise InputError(f"{lang!r} prompts are not rendered: English uses Asterisk's core sounds")
    started = time.perf_counter()
    folder = out / lang
    report = BuildReport(lang, folder)
    manifest_path = folder / "screener" / MANIFEST
    manifest = _read_manifest(manifest_path)
    voice = synth
    try:
        for name, text in texts.items():
            if not text.strip():
                raise InputError(f"prompt {name} has no text")
            path = folder / f"{name}.wav"
            digest = _digest(text)
            if path.exists():
                if manifest.get(name) == digest:
                    report.unchanged.append(name)
                    report.bytes += path.stat().st_size
                    report.audio_seconds += (path.stat().st_size - 44) / (2 * RATE)
                    continue
                if name not in manifest and not force:
                    report.foreign.append(name)
                    continue
            if voice is None:
                voice = _voice()
            pcm = to_phone(*voice(text))
            write_wav(path, pcm)
            manifest[name] = digest
            report.written.append(name)
            report.bytes += path.stat().st_size
            report.audio_seconds += len(pcm) / (2 * RATE)
    except OSError as exc:
        raise PromptsError(f"cannot write prompts under {folder}: {exc.strerror}") from exc
    finally:
        if report.written:
            with contextlib.suppress(OSError):
                _folder(manifest_path.parent)
                tmp = manifest_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
                os.replace(tmp, manifest_path)
    report.seconds = time.perf_counter() - started
    return report


def words_for(overrides: Mapping[str, Any] | None) -> PromptWords:
    """The shipped wording with the office's ``[prompts.<lang>]`` values laid over it."""
    return dataclasses.replace(PromptWords(), **dict(overrides or {}))
