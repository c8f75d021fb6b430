"""The embedded default corpus: English sentences spoken by espeak-ng, made offline from a seed.

Each sentence is 3-8 words drawn from ds2.data.wordlist. A speaker is an espeak-ng voice
(accent + variant, e.g. en-us+f3) with its own speed and pitch; every speaker reads one chapter
of UTTERANCES_PER_SPEAKER sentences. Splits have their own speakers (new speed/pitch combinations
of the same voice timbres) and no sentence appears twice in the corpus, so dev/test measure
sentences and speakers the model has not heard. The audio is rendered by `espeak-ng -w`,
resampled to the feature sample rate and written in LibriSpeech's layout, so the LibriSpeech
scanner reads it:
    <root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac, <speaker>-<chapter>.trans.txt

Deterministic: the same seed, sizes and espeak-ng version give identical text and audio bytes.
Each split draws from its own random stream, and test and dev are planned before train, so
changing the train size leaves dev and test unchanged.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Dict, List, Union

import numpy as np

from ds2.data.wordlist import WORDS
from ds2.errors import UserError

SPLITS = ("train", "dev", "test")
PLANNING_ORDER = ("test", "dev", "train")  # held-out splits first: their sentences stay fixed
WORDS_PER_SENTENCE = (3, 8)                 # inclusive range
UTTERANCES_PER_SPEAKER = 25
VOICE_ACCENTS = ("en-us", "en")             # American and British English base voices
VOICE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
SPEED_WPM = (130, 200)                      # espeak-ng -s, words per minute (its default is 175)
PITCH = (25, 75)                            # espeak-ng -p, 0..99 (its default is 50)
# Numeric, LibriSpeech-like ids: speakers are numbered on from FIRST_SPEAKER_ID in planning order
# (test, dev, train), and each speaker's single chapter is numbered speaker id + CHAPTER_ID_OFFSET.
FIRST_SPEAKER_ID = 1000
CHAPTER_ID_OFFSET = 100000
MARKER_NAME = "synth.json"                  # written last; its parameters say what the corpus is
GENERATOR_VERSION = 2                       # bump when the plan or rendering changes


class SynthError(UserError):
    """The synthetic corpus cannot be built; the message says what to do."""


@dataclass(frozen=True)
class SynthJob:
    """One utterance to render: what to say, how, and where (relative to the corpus root)."""
    text: str
    voice: str
    speed: int
    pitch: int
    audio_path: str


def espeak_path() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise SynthError("espeak-ng is needed for the synthetic corpus and is not on PATH; "
                         "install it, e.g. `apt-get install espeak-ng`")
    return path


def espeak_version() -> str:
    try:
        result = subprocess.run([espeak_path(), "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SynthError(f"espeak-ng did not run: {exc}") from exc
    return result.stdout.split("Data at:")[0].strip()  # the version, without the install path


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(*WORDS_PER_SENTENCE)))


def plan_corpus(sizes: Dict[str, int], seed: int) -> Dict[str, List[SynthJob]]:
    """The jobs of every split, and the chapter transcripts follow from them. Pure and deterministic."""
    used_sentences = set()
    plan: Dict[str, List[SynthJob]] = {}
    speaker_id = FIRST_SPEAKER_ID
    for split in PLANNING_ORDER:
        rng = random.Random(f"{seed}-{split}")  # str seeds are hashed with SHA-512: stable across runs
        jobs: List[SynthJob] = []
        while len(jobs) < sizes[split]:
            voice = f"{rng.choice(VOICE_ACCENTS)}+{rng.choice(VOICE_VARIANTS)}"
            speed, pitch = rng.randint(*SPEED_WPM), rng.randint(*PITCH)
            chapter_id = speaker_id + CHAPTER_ID_OFFSET
            for index in range(min(UTTERANCES_PER_SPEAKER, sizes[split] - len(jobs))):
                text = _sentence(rng)
                while text in used_sentences:
                    text = _sentence(rng)
                used_sentences.add(text)
                name = f"{speaker_id}-{chapter_id}-{index:04d}"
                jobs.append(SynthJob(text, voice, speed, pitch, f"{split}/{speaker_id}/{chapter_id}/{name}.flac"))
            speaker_id += 1
        plan[split] = jobs
    return {split: plan[split] for split in SPLITS}


def render(job: SynthJob, root: str, sample_rate: int) -> None:
    """Speak job.text with espeak-ng, resample to sample_rate, write 16-bit FLAC."""
    import soundfile
    from ds2.features import load_audio

    audio_path = os.path.join(root, job.audio_path)
    handle, wav_path = tempfile.mkstemp(dir=os.path.dirname(audio_path), suffix=".wav")
    os.close(handle)
    try:
        # Lower case: espeak-ng spells out all-caps words as abbreviations ("US" -> "U S").
        command = [espeak_path(), "-v", job.voice, "-s", str(job.speed), "-p", str(job.pitch),
                   "-w", wav_path, job.text.lower()]
        # An absolute program path and close_fds=False let Python 3.9 start espeak-ng with
        # posix_spawn instead of fork+exec: forking this large process for each of thousands
        # of utterances cost more system time than espeak-ng itself.
        result = subprocess.run(command, capture_output=True, text=True, close_fds=False)
        if result.returncode != 0:
            raise SynthError(f"{' '.join(command)} failed: {result.stderr.strip()}")
        audio = load_audio(wav_path, sample_rate)
    finally:
        os.unlink(wav_path)
    # Resampling can overshoot full scale slightly; libsndfile would wrap around, not clip.
    soundfile.write(audio_path, np.clip(audio, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")


def _render_star(arguments) -> None:
    render(*arguments)


def corpus_parameters(sizes: Dict[str, int], seed: int, sample_rate: int) -> dict:
    """Everything the corpus content depends on; stored in the marker file."""
    return {"generator_version": GENERATOR_VERSION, "seed": seed, "sizes": {s: sizes[s] for s in SPLITS},
            "sample_rate": sample_rate, "espeak": espeak_version(),
            "words_sha256": hashlib.sha256(" ".join(WORDS).encode()).hexdigest()}


def is_complete(root: Union[str, Path], parameters: dict) -> bool:
    marker = Path(root) / MARKER_NAME
    try:
        return json.loads(marker.read_text()) == parameters
    except (OSError, ValueError):
        return False


def build_corpus(root: Union[str, Path], sizes: Dict[str, int], seed: int, sample_rate: int,
                 workers: int) -> Path:
    """Render the corpus into root, unless a finished one with the same parameters is there.

    Rendering happens in a staging directory that replaces root only when complete, so an
    interrupted run never leaves something that looks finished. A previous synthetic corpus
    (recognised by its marker file) with other parameters is replaced; any other existing
    directory at root is refused rather than deleted.
    """
    import librosa  # noqa: F401  imported before the pool forks, so workers do not each import it

    from ds2.progress import progress

    root = Path(root)
    if root.exists() and not (root / MARKER_NAME).exists():
        raise SynthError(f"{root} exists but is not a synthetic corpus (no {MARKER_NAME}); move it away")
    parameters = corpus_parameters(sizes, seed, sample_rate)
    if is_complete(root, parameters):
        return root
    plan = plan_corpus(sizes, seed)
    # One fixed staging name: a run killed before its cleanup leaves it, and the next run removes it.
    # (Two preprocess runs on one data_dir at the same time are not supported.)
    staging = root.with_name(f".{root.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for split, jobs in plan.items():
            chapters: Dict[Path, List[str]] = {}
            for job in jobs:
                audio = Path(job.audio_path)
                chapters.setdefault(audio.parent, []).append(f"{audio.stem} {job.text}")
            for chapter_dir, lines in chapters.items():
                (staging / chapter_dir).mkdir(parents=True, exist_ok=True)
                speaker, chapter = chapter_dir.parent.name, chapter_dir.name
                (staging / chapter_dir / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
        jobs = [(job, str(staging), sample_rate) for split in SPLITS for job in plan[split]]
        with Pool(workers) as pool, progress(total=len(jobs), desc="synthesising speech", unit="utt") as bar:
            for _ in pool.imap_unordered(_render_star, jobs, chunksize=8):
                bar.update(1)
        (staging / MARKER_NAME).write_text(json.dumps(parameters, indent=1, sort_keys=True) + "\n")
        if root.exists():
            shutil.rmtree(root)  # an older synthetic corpus with other parameters (checked above)
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
