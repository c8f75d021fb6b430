"""The transcription API's response formats: json, text, verbose_json, srt and vtt, with word times and
segments from the CTC alignment."""
import json

import pytest

from ds2.serving.formats import RESPONSE_FORMATS, SEGMENT_PAUSE_SECONDS, render, timed, timestamp

from .serving_helpers import BLANK, LABELS, path_log_probs, spelled

FRAME = 0.04


def two_phrases():
    """'HELLO THERE' then a pause longer than SEGMENT_PAUSE_SECONDS, then 'GOOD DAY'."""
    first, _ = spelled("HELLO THERE", lead=2)
    pause = [BLANK] * int(SEGMENT_PAUSE_SECONDS / FRAME + 5)
    second, _ = spelled("GOOD DAY", lead=0)
    path = first + pause + second
    return timed("HELLO THERE GOOD DAY", path_log_probs(path), LABELS, FRAME, len(path) * FRAME)


def test_every_format_renders():
    transcription = two_phrases()
    for fmt in RESPONSE_FORMATS:
        body, media_type = render(transcription, fmt)
        assert body and media_type
    with pytest.raises(ValueError):
        render(transcription, "xml")


def test_json_and_text_hold_the_transcript():
    transcription = two_phrases()
    assert json.loads(render(transcription, "json")[0]) == {"text": "HELLO THERE GOOD DAY"}
    body, media_type = render(transcription, "text")
    assert body == "HELLO THERE GOOD DAY\n" and media_type.startswith("text/plain")


def test_verbose_json_has_words_and_segments_cut_at_the_pause():
    body = json.loads(render(two_phrases(), "verbose_json")[0])
    assert body["task"] == "transcribe" and body["language"] == "english" and body["text"] == "HELLO THERE GOOD DAY"
    assert [w["word"] for w in body["words"]] == ["HELLO", "THERE", "GOOD", "DAY"]
    assert all(w["start"] < w["end"] for w in body["words"])
    assert all(a["end"] <= b["start"] for a, b in zip(body["words"], body["words"][1:]))
    assert [s["text"] for s in body["segments"]] == ["HELLO THERE", "GOOD DAY"]
    first, second = body["segments"]
    assert (first["id"], second["id"]) == (0, 1)
    assert first["start"] == body["words"][0]["start"] and first["end"] == body["words"][1]["end"]
    assert second["start"] - first["end"] >= SEGMENT_PAUSE_SECONDS
    assert first["tokens"] == [LABELS.index(c) for c in "HELLO THERE"]
    # Every field OpenAI's verbose_json segment has.
    assert set(first) >= {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                          "compression_ratio", "no_speech_prob"}
    assert -1.0 < first["avg_logprob"] < 0


def test_srt_and_vtt_cues_are_the_segments():
    transcription = two_phrases()
    first, second = transcription.segments
    srt = render(transcription, "srt")[0]
    assert srt == (f"1\n{timestamp(first.start, ',')} --> {timestamp(first.end, ',')}\nHELLO THERE\n\n"
                   f"2\n{timestamp(second.start, ',')} --> {timestamp(second.end, ',')}\nGOOD DAY\n\n")
    vtt, media_type = render(transcription, "vtt")
    assert media_type.startswith("text/vtt")
    assert vtt == (f"WEBVTT\n\n{timestamp(first.start, '.')} --> {timestamp(first.end, '.')}\nHELLO THERE\n\n"
                   f"{timestamp(second.start, '.')} --> {timestamp(second.end, '.')}\nGOOD DAY\n\n")


def test_no_word_ends_after_the_audio():
    path, _ = spelled("HI", lead=0, gap=0)    # the last letter fills the last frame
    transcription = timed("HI", path_log_probs(path), LABELS, FRAME, len(path) * FRAME - 0.01)
    assert transcription.words[-1].end == transcription.duration == len(path) * FRAME - 0.01


def test_timestamps():
    assert timestamp(0, ",") == "00:00:00,000"
    assert timestamp(3723.4567, ".") == "01:02:03.457"
    assert timestamp(59.9996, ",") == "00:01:00,000"


def test_a_long_phrase_is_cut_into_segments_of_at_most_the_maximum():
    from ds2.serving.formats import SEGMENT_MAX_SECONDS

    text = " ".join(["WORD"] * 40)
    path, _ = spelled(text, frames_per_label=3, gap=1)
    transcription = timed(text, path_log_probs(path), LABELS, FRAME, len(path) * FRAME)
    assert len(transcription.segments) > 1
    assert all(s.end - s.start <= SEGMENT_MAX_SECONDS for s in transcription.segments)
    assert " ".join(s.text for s in transcription.segments) == text


def test_no_words_no_segments():
    transcription = timed("", path_log_probs([BLANK] * 10), LABELS, FRAME, 0.4)
    assert transcription.words == [] and transcription.segments == []
    assert render(transcription, "srt")[0] == "" and render(transcription, "vtt")[0] == "WEBVTT\n\n"
    assert json.loads(render(transcription, "verbose_json")[0])["segments"] == []
