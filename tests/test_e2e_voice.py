"""Japanese prompts and recorded calls end to end: real Asterisk, real SIP.

The carrier's caller records what it hears (``HEAR``, sandbox-carrier/README.md); that audio is
matched against the files ``screener prompts build`` rendered for the PBX, by normalized
cross-correlation: the challenge must be heard as intro, then this call's digits, then suffix.
"""

from __future__ import annotations

import asyncio
import json
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from screener.recordings import recording_path
from tests.conftest import ScreenerProcess
from tests.probe import Call, Probe, SandboxInfo, user_event

# Generous: the sandbox may first have to wait for another user of its lock.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

RATE = 8000


def pcm(path: Path) -> np.ndarray[Any, np.dtype[np.float64]]:
    """A 16-bit mono WAV's samples as floats."""
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE), path
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64)


def match(heard: np.ndarray[Any, Any], prompt: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Normalized cross-correlation of ``prompt`` at every offset in ``heard`` (1.0 = same)."""
    from scipy.signal import fftconvolve

    n = len(prompt)
    p = prompt - prompt.mean()
    dots = fftconvolve(heard, p[::-1], mode="valid")
    window = np.ones(n)
    sums = fftconvolve(heard, window, mode="valid")
    squares = fftconvolve(heard**2, window, mode="valid")
    energy = np.maximum(squares - sums**2 / n, 1e-9)
    scores: np.ndarray[Any, Any] = dots / np.sqrt(energy * float(np.sum(p**2)))
    return scores


def find(
    heard: np.ndarray[Any, Any], prompt: np.ndarray[Any, Any], after: int = 0
) -> tuple[int, float]:
    """Where ``prompt`` best matches ``heard`` at or after sample ``after``, and how well."""
    scores = match(heard[after:], prompt)
    best = int(np.argmax(scores))
    return after + best, float(scores[best])


# How far from where a digit was found another digit may be tried in its place (20 ms).
SLACK = RATE // 50


def fit_at(audio: np.ndarray[Any, Any], prompt: np.ndarray[Any, Any], place: int) -> float:
    """How well ``prompt`` matches ``audio`` starting at ``place``, give or take ``SLACK``."""
    window = audio[max(0, place - SLACK) : place + len(prompt) + SLACK]
    return float(np.max(match(window, prompt))) if len(window) >= len(prompt) else 0.0


def sounds(sandbox: SandboxInfo) -> Path:
    """The PBX's Japanese prompts (rendered by scripts/sandbox up)."""
    folder = Path(sandbox.raw["sounds_dir"]) / "ja"
    if not (folder / "screener" / "challenge-intro.wav").is_file():
        pytest.fail(f"the sandbox has no rendered Japanese prompts in {folder}")
    return folder


async def heard(
    sandbox: SandboxInfo, probe: Probe, call: Call, name: str, within: float = 30
) -> np.ndarray[Any, Any]:
    """What the caller heard, once its channel has hung up and the carrier closed the file."""
    assert probe.carrier is not None
    caller = probe.carrier_channel(call)
    await probe.carrier.wait_for(
        lambda e: e.name.lower() == "hangup" and e.get("Uniqueid") == caller, within
    )
    path = Path(sandbox.raw["carrier"]["instance_dir"]) / "spool" / "monitor" / name
    deadline = time.monotonic() + 10
    while True:
        await asyncio.sleep(0.5)  # MixMonitor closes the file just after the hangup
        try:
            return pcm(path)
        except (OSError, EOFError, wave.Error) as exc:
            if time.monotonic() > deadline:
                pytest.fail(f"the caller's recording {path} is not readable: {exc}")


def configured(sandbox: SandboxInfo, tmp: Path, toml: str) -> ScreenerProcess:
    """``screener run`` with this configuration file, against the sandbox."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "screener.toml").write_text(toml, encoding="utf-8")
    return ScreenerProcess(
        sandbox,
        tmp,
        SCREENER_CONFIG=str(tmp / "screener.toml"),
        SCREENER_RECORDING_FOLDER=sandbox.raw["recordings_dir"],
    )


async def pass_challenge(probe: Probe, call: Call) -> float:
    """Key the call's code once the caller's script polls for it; seconds to staff ringing."""
    assert await probe.routed(call) == ("challenge", False)
    answered = time.monotonic()
    code = await probe.challenge_code(call)
    await probe.send_code(call, code)
    outcome = await probe.pbx.wait_for(user_event("ScreenChallenge", call.call_id), 30)
    assert (outcome.get("Outcome") or "").lower() == "pass"
    await probe.staff_dialled(call)
    return time.monotonic() - answered


async def timed_challenge(
    sandbox: SandboxInfo, probe: Probe, number: str, language: str
) -> tuple[np.ndarray[Any, Any], str]:
    """One challenged call that keys its code 3.5 s after the answer (as the README's figures
    are measured), recorded on the caller's side; what it heard, and its code.

    The Japanese and the English test both make exactly this call, so the two figures they
    print in one run compare like with like.
    """
    name = f"heard_{time.time_ns()}.wav"
    call = await probe.call_sip(number, dtmf="wait", dtmf_delay=3.5, hold=8, hear=name)
    to_staff = await pass_challenge(probe, call)
    code = await probe.challenge_code(call)
    assert probe.carrier is not None
    await probe.carrier.wait_for(user_event("StaffRinging"), 10)
    print(f"answer → staff dialled ({language} prompts): {to_staff:.2f} s")
    # Stay on the line a little: the caller's recorder writes what it heard with a delay, and
    # a hangup drops what it had not written yet.
    await asyncio.sleep(2.5)
    await probe.hangup(call)
    return await heard(sandbox, probe, call, name), code


async def test_caller_hears_the_japanese_challenge_with_its_own_digits(
    sandbox: SandboxInfo, screener: ScreenerProcess, probe: Probe
) -> None:
    """The caller hears 「おつなぎするには、<digits>、を押してください」, keys them; staff ring."""
    folder = sounds(sandbox)
    screener.start()
    audio, code = await timed_challenge(sandbox, probe, "08001230007", "Japanese")
    intro_at, intro = find(audio, pcm(folder / "screener/challenge-intro.wav"))
    assert intro > 0.6, f"intro not heard (best match {intro:.2f})"
    at = intro_at
    digits = [pcm(folder / f"digits/{d}.wav") for d in range(10)]
    for digit in code:
        place, score = find(audio, digits[int(digit)], at)
        assert score > 0.6, f"digit {digit} not heard after the intro (best {score:.2f})"
        # At that place the right digit fits better than any other digit would. Each is tried
        # only where this one was found (give or take SLACK): a window as long as the longest
        # digit also held the next digit whole, which then fit as well (both about 1.0), and
        # which of the two won was chance ("heard 3 for 7" for the code 73).
        fits = [fit_at(audio, d, place) for d in digits]
        assert int(np.argmax(fits)) == int(digit), f"heard {np.argmax(fits)} for {digit}: {fits}"
        assert place - at < 3 * RATE, "digits must follow the intro directly"
        at = place
    # Keyed 3.5 s after the answer (as the English timing was measured), the caller's digits
    # stop the prompt (Read) while the suffix still plays: look for its first half.
    opening = pcm(folder / "screener/challenge-suffix.wav")
    suffix_at, suffix = find(audio, opening[: len(opening) // 2], at)
    assert suffix > 0.6 and suffix_at > at, f"suffix not heard after the digits ({suffix:.2f})"
    _, thanks = find(audio, pcm(folder / "screener/challenge-thanks.wav"), suffix_at)
    assert thanks > 0.6, f"thank-you not heard after the challenge ({thanks:.2f})"


async def test_english_caller_passes_the_same_challenge(
    sandbox: SandboxInfo, probe: Probe, tmp_path: Path
) -> None:
    """The same call with the office language English: staff ring, and no Japanese is heard.

    Its printed figure is the English side of the comparison with the Japanese test above.
    """
    folder = sounds(sandbox)
    service = ScreenerProcess(sandbox, tmp_path, SCREENER_LANGUAGE="en")
    try:
        service.start()
        audio, _ = await timed_challenge(sandbox, probe, "08001230009", "English")
    finally:
        service.stop()
    assert float(np.sqrt(np.mean(audio**2))) > 100, "the English caller heard nothing"
    _, intro = find(audio, pcm(folder / "screener/challenge-intro.wav"))
    assert intro < 0.5, f"the English caller heard the Japanese intro ({intro:.2f})"


def seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


async def test_caller_may_key_the_code_while_the_suffix_plays(
    sandbox: SandboxInfo, screener: ScreenerProcess, probe: Probe
) -> None:
    """Digits keyed as soon as they are heard (during 「を押してください」) pass the challenge."""
    folder = sounds(sandbox)
    screener.start()
    # 0.5 s of settling, the intro and two digits, then a little reaction time: the suffix is
    # still playing when the caller keys.
    digit = max(seconds(folder / f"digits/{d}.wav") for d in range(10))
    early = 0.5 + seconds(folder / "screener/challenge-intro.wav") + 2 * digit + 0.2
    assert early + 0.3 < 0.5 + seconds(folder / "screener/challenge-intro.wav") + 2 * digit + (
        seconds(folder / "screener/challenge-suffix.wav")
    )
    call = await probe.call_sip("08001230008", dtmf="wait", dtmf_delay=early, hold=3)
    to_staff = await pass_challenge(probe, call)
    print(f"answer → staff dialled, keyed right after the digits: {to_staff:.2f} s")


async def test_withheld_caller_hears_the_japanese_number_request(
    sandbox: SandboxInfo, probe: Probe, tmp_path: Path
) -> None:
    """A withheld caller is asked, in Japanese, to call again with the number shown."""
    folder = sounds(sandbox)
    service = configured(sandbox, tmp_path, "[screening]\nwithheld_announcement = true\n")
    try:
        service.start()
        name = f"heard_{time.time_ns()}.wav"
        call = await probe.call_sip("anonymous", hold=10, hear=name)
        assert await probe.routed(call) == ("reject", False)
        audio = await heard(sandbox, probe, call, name)
    finally:
        service.stop()
    # The PBX hangs up as the request ends; the caller's recorder may lose its last moments.
    _, request = find(audio, pcm(folder / "screener/withheld.wav")[: 2 * RATE])
    assert request > 0.6, f"number request not heard (best match {request:.2f})"
    _, challenge = find(audio, pcm(folder / "screener/challenge-intro.wav"))
    assert challenge < request, "the withheld caller heard the challenge instead"


async def test_recorded_call_is_warned_and_leaves_its_recording(
    sandbox: SandboxInfo, probe: Probe, tmp_path: Path
) -> None:
    """A toll-free call (record = true) hears the warning; its recording is in the call log."""
    folder = sounds(sandbox)
    service = configured(sandbox, tmp_path, "[policy.record]\ntoll_free = true\n")
    try:
        service.start()
        name = f"heard_{time.time_ns()}.wav"
        # The warning (about 3 s) comes first, then the challenge.
        call = await probe.call_sip("0120555007", dtmf="wait", dtmf_delay=7, hold=3, hear=name)
        to_staff = await pass_challenge(probe, call)
        print(f"answer → staff dialled (recorded, with the warning): {to_staff:.2f} s")
        await probe.pbx.wait_for(user_event("ScreenRecording", call.call_id, Status="done"), 30)
        deadline = time.monotonic() + 10
        while True:
            rows = json.loads(service.cli("calls", "--json", "--recordings").stdout)
            row = next((r for r in rows if r["call_id"] == call.call_id), None)
            if (row and row["recording"]["seconds"] is not None) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        audio = await heard(sandbox, probe, call, name)
    finally:
        service.stop()
    assert row is not None, f"call {call.call_id} not among the recorded calls: {rows}"
    recording = Path(row["recording"]["path"])
    assert recording == recording_path(Path(sandbox.raw["recordings_dir"]), call.call_id)
    assert recording.stat().st_size > 44 + RATE * 2, "the recording is (nearly) empty"
    assert recording.stat().st_mode & 0o077 == 0, "the recording is readable by others"
    assert row["recording"]["seconds"] >= 3
    recorded = pcm(recording)
    assert float(np.sqrt(np.mean(recorded**2))) > 100, "the recording is silent"
    warning = pcm(folder / "screener/recording.wav")
    warned_at, warned = find(audio, warning)
    assert warned > 0.6, f"the caller did not hear the recording warning ({warned:.2f})"
    intro_at, intro = find(audio, pcm(folder / "screener/challenge-intro.wav"))
    assert intro > 0.6 and intro_at > warned_at, "the warning must come before the challenge"
    # The recording holds the call itself: the warning is in it too.
    assert find(recorded, warning)[1] > 0.5


async def test_hangup_during_the_recording_warning_is_an_outcome(
    sandbox: SandboxInfo, probe: Probe, tmp_path: Path
) -> None:
    """A challenged caller who hangs up while the warning plays is recorded as ``hangup``.

    The challenge's hangup handler must be in place before the warning, or the call keeps no
    outcome and the learned auto-block never hears of it.
    """
    service = configured(sandbox, tmp_path, "[policy.record]\ntoll_free = true\n")
    try:
        service.start()
        call = await probe.call_local("0120555008")
        assert await probe.routed(call) == ("challenge", False)
        await probe.pbx.wait_for(user_event("ScreenRecording", call.call_id, Status="started"), 10)
        await probe.hangup(call)
        event = await probe.pbx.wait_for(user_event("ScreenChallenge", call.call_id), 10)
        assert (event.get("Outcome") or "").lower() == "hangup"
        assert event.get("Attempts") == "0"
        deadline = time.monotonic() + 10
        while True:
            rows = json.loads(service.cli("calls", "--json").stdout)
            row = next((r for r in rows if r["call_id"] == call.call_id), None)
            if (row and row["outcome"]) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
    finally:
        service.stop()
    assert row is not None and row["outcome"] == "hangup", row
