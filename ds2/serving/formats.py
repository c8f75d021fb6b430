"""The transcription API's response formats: json, text, verbose_json, srt and vtt, as OpenAI's
/v1/audio/transcriptions writes them.

    transcription = timed(text, log_probs, labels, frame_seconds, duration)
    body, media_type = render(transcription, "srt")

Word times come from the CTC alignment of the transcript (ds2.alignment). Segments (verbose_json's
segments, and the cues of srt and vtt) are runs of words cut at pauses and at a maximum length, so
subtitles stay readable; a transcript without words has no segments.
"""
from __future__ import annotations

import json
import zlib
from typing import Any, Dict, List, NamedTuple, Tuple

import numpy as np

from ds2.alignment import Word, align, path_log_prob, word_times
from ds2.text import encode

RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
# A pause of this many seconds between two words starts a new segment (a subtitle cue).
SEGMENT_PAUSE_SECONDS = 0.5
# A segment never runs longer than this: a cue longer than a few lines of subtitle is hard to read.
SEGMENT_MAX_SECONDS = 8.0
LANGUAGE = "english"    # verbose_json names the language as Whisper does: in full, lower case


class Segment(NamedTuple):
    id: int
    start: float
    end: float
    text: str
    tokens: List[int]           # label indices of the text
    avg_logprob: float          # mean per-frame log-probability of the aligned path over the segment
    compression_ratio: float    # len(text) / len(zlib(text)), as Whisper reports it


class Transcription(NamedTuple):
    text: str
    duration: float             # seconds of audio
    words: List[Word]
    segments: List[Segment]


def timed(text: str, log_probs: np.ndarray, labels: str, frame_seconds: float, duration: float) -> Transcription:
    """text with word times and segments, aligned to log_probs [frames, labels] (output frames of
    frame_seconds each)."""
    targets = encode(text, labels)
    spans = align(log_probs, targets)
    if spans is None:   # fewer frames than the text needs: cannot come from these log-probabilities
        raise ValueError(f"{len(targets)} labels do not fit in {log_probs.shape[0]} output frames")
    # The last output frame may reach past the end of the audio (frames are whole): no time past the end.
    words = [Word(w.word, min(w.start, duration), min(w.end, duration)) for w in word_times(text, spans, frame_seconds)]
    # First label of each word: the word's position in text (words are split at single spaces).
    starts, position = [], 0
    for word in words:
        starts.append(position)
        position += len(word.word) + 1
    segments: List[Segment] = []
    group: List[int] = []
    for index, word in enumerate(words):
        if group and (word.start - words[group[-1]].end >= SEGMENT_PAUSE_SECONDS
                      or word.end - words[group[0]].start > SEGMENT_MAX_SECONDS):
            segments.append(_segment(len(segments), group, words, starts, spans, targets, log_probs))
            group = []
        group.append(index)
    if group:
        segments.append(_segment(len(segments), group, words, starts, spans, targets, log_probs))
    return Transcription(text, duration, words, segments)


def _segment(number: int, group: List[int], words: List[Word], starts: List[int], spans, targets,
             log_probs: np.ndarray) -> Segment:
    first, last = group[0], group[-1]
    text = " ".join(words[i].word for i in group)
    begin, end = starts[first], starts[last] + len(words[last].word)
    encoded = text.encode("utf-8")
    return Segment(id=number, start=words[first].start, end=words[last].end, text=text,
                   tokens=list(targets[begin:end]),
                   avg_logprob=round(path_log_prob(log_probs, spans, targets, spans[begin][0], spans[end - 1][1]), 4),
                   compression_ratio=round(len(encoded) / len(zlib.compress(encoded)), 4))


def verbose(transcription: Transcription) -> Dict[str, Any]:
    """verbose_json's body."""
    return {
        "task": "transcribe", "language": LANGUAGE, "duration": round(transcription.duration, 3),
        "text": transcription.text,
        "segments": [dict(segment._asdict(), seek=0, temperature=0.0, no_speech_prob=0.0)
                     for segment in transcription.segments],
        "words": [word._asdict() for word in transcription.words],
    }


def timestamp(seconds: float, decimal: str) -> str:
    """HH:MM:SS,mmm (srt, decimal ',') or HH:MM:SS.mmm (vtt, '.')."""
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def srt(transcription: Transcription) -> str:
    return "".join(f"{segment.id + 1}\n{timestamp(segment.start, ',')} --> {timestamp(segment.end, ',')}\n"
                   f"{segment.text}\n\n" for segment in transcription.segments)


def vtt(transcription: Transcription) -> str:
    return "WEBVTT\n\n" + "".join(f"{timestamp(segment.start, '.')} --> {timestamp(segment.end, '.')}\n"
                                  f"{segment.text}\n\n" for segment in transcription.segments)


def render(transcription: Transcription, response_format: str) -> Tuple[str, str]:
    """(body, media type) of the response in response_format (one of RESPONSE_FORMATS)."""
    if response_format == "json":
        return json.dumps({"text": transcription.text}), "application/json"
    if response_format == "text":
        return transcription.text + "\n", "text/plain; charset=utf-8"
    if response_format == "verbose_json":
        return json.dumps(verbose(transcription)), "application/json"
    if response_format == "srt":
        return srt(transcription), "text/plain; charset=utf-8"
    if response_format == "vtt":
        return vtt(transcription), "text/vtt; charset=utf-8"
    raise ValueError(f"unknown response format {response_format!r}")
