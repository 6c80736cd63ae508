"""predict.py's output: each prediction printed as its batch comes (a progress bar on stderr), or
written to --output (.jsonl/.csv) through a temporary file renamed into place at the end. What a
prediction looks like, its task's Predictor says."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..tasks.base import FEW_TEXTS

OUTPUT_SUFFIXES = (".jsonl", ".csv")


class PredictionWriter:
    """--output: records written to a temporary file next to PREDS, renamed to PREDS once all are
    written, so that a failed run leaves neither half a file nor a changed one."""

    def __init__(self, path: Path, columns: list[str], csv_row=None):
        import csv

        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.file = open(self.tmp, "w", encoding="utf-8", newline="")
        self.csv = csv.DictWriter(self.file, columns, extrasaction="ignore") if path.suffix.lower() == ".csv" \
            else None
        self.csv_row = csv_row
        if self.csv:
            self.csv.writeheader()

    def write(self, record: dict) -> None:
        if self.csv:
            self.csv.writerow(self.csv_row(record))
        else:
            self.file.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self, ok: bool) -> None:
        self.file.close()
        if ok:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def emit(args, items: list, batches, predictor) -> None:
    """Print (stdout) or write (--output) each result as its batch comes, with a progress bar on stderr."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(items), unit="text", file=sys.stderr, dynamic_ncols=True,
               disable=not args.progress or len(items) <= FEW_TEXTS)
    writer = PredictionWriter(args.output, predictor.columns(items), predictor.csv_row) if args.output else None
    done, ok = 0, False
    try:
        for results in batches:
            lines = []
            for e, r in zip(items[done:done + len(results)], results):
                if writer:
                    writer.write(predictor.record(e, r))
                elif args.json:
                    lines.append(json.dumps(predictor.json_record(r), ensure_ascii=False))
                else:
                    lines.append(predictor.show(e, r))
            if lines:
                tqdm.write("\n".join(lines), file=sys.stdout)  # above the bar, not through it
            done += len(results)
            bar.update(len(results))
        ok = True
    finally:
        bar.close()
        if writer:
            writer.close(ok)
    if writer:
        print(f"wrote {done} predictions to {args.output}")
