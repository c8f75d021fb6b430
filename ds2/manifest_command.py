"""`ds2 manifest to-csv IN.json OUT.csv` and `ds2 manifest to-json IN.csv OUT.json`: convert a manifest
between its two forms (ds2.data.manifest describes both). Entries that cannot be converted are listed and
make the exit status 1; the others are written.
"""
from __future__ import annotations

import os
import sys

from ds2.data.manifest import NO_TRANSCRIPT_FILE, ManifestError, read_manifest, write_csv_manifest, write_json_manifest


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["to-csv", "to-json"],
                        help="to-csv: JSON manifest -> CSV; to-json: CSV manifest -> JSON (durations from audio headers)")
    parser.add_argument("input", help="manifest to read (.json or .csv)")
    parser.add_argument("output", help="manifest to write")


def run(cfg, args) -> int:
    """Convert; entries that cannot be converted are listed and make the exit status 1."""
    try:
        utterances, report = read_manifest(args.input)
        if args.action == "to-csv":
            for utterance in [u for u in utterances if not os.path.isfile(u.transcript_path)]:
                report.add(NO_TRANSCRIPT_FILE, utterance.id)
            utterances = [u for u in utterances if os.path.isfile(u.transcript_path)]
            write_csv_manifest(args.output, utterances)
        else:
            write_json_manifest(args.output, utterances)
    except (ManifestError, OSError) as exc:
        print(f"ds2 manifest: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(utterances)} utterances to {args.output}")
    if report.total:
        print(report, file=sys.stderr)
        return 1
    return 0
