"""The manifest: what ingest accepted (manifest.csv) and refused (rejects.csv), one row per image,
and the CSV both are written as. Ingest writes it; shard and the benchmarks read it."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from pathlib import Path

MANIFEST_FIELDS = ["id", "source_uri", "sha256", "width", "height", "split", "path", "source_channels"]
REJECT_FIELDS = ["source_uri", "split", "reason", "detail"]


@dataclass(frozen=True)
class ManifestRow:
    id: str
    source_uri: str
    sha256: str
    width: int
    height: int
    split: str
    path: str
    source_channels: int  # 1 for gray sources: SR benchmarks score those on gray values, not Y


@dataclass(frozen=True)
class RejectRow:
    source_uri: str
    split: str
    reason: str
    detail: str


def csv_text(fields: list[str], rows) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(asdict(row))
    return buf.getvalue()


def write_csv(path: Path, fields: list[str], rows) -> None:
    path.write_text(csv_text(fields, rows))


def read_manifest(path: Path) -> list[ManifestRow]:
    with open(path, newline="") as fh:
        return [
            ManifestRow(r["id"], r["source_uri"], r["sha256"], int(r["width"]), int(r["height"]), r["split"], r["path"],
                        int(r["source_channels"]))
            for r in csv.DictReader(fh)
        ]

