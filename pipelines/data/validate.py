"""Validating one listed file or S3 object: the work ingest sends to its engine's workers.

Kept free of Prefect so that Ray's workers start fast (they import this module, not the flow's).
A worker reads the file or object itself (S3 objects never pass through the driver), decodes it
within ``DecodeLimits`` and answers with the accepted image as PNG bytes, or a reasoned reject.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

from pipelines.common.schema import S3Config
from pipelines.services import s3 as s3lib
from training.images import DecodeLimits, Rejected, RejectReason, decode_image, encode_png, pixel_sha256, read_file


@dataclass(frozen=True, order=True)
class Candidate:
    uri: str
    split: str
    label: str  # the source's name, e.g. T91
    rel: str  # path below the source, e.g. HR/t1.png
    size: int = -1  # bytes, when the listing says (S3); -1: ask the file
    # Set when the listing already refuses it (a dot-file, a link leaving the folder): (reason, detail).
    refused: tuple[str, str] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Accepted:
    sha256: str  # of the decoded pixels: exact duplicates are found by it
    width: int
    height: int
    channels: int
    png: bytes


@dataclass(frozen=True)
class Validator:
    """``validator(candidate) -> Accepted | Rejected``; small and picklable, sent to every worker."""

    limits: dict[str, DecodeLimits]  # per split
    s3: S3Config
    retries: int
    cwd: str  # the driver's: a relative source path means the same file on a worker elsewhere

    def __call__(self, c: Candidate) -> Accepted | Rejected:
        try:
            if c.refused:
                raise Rejected(RejectReason(c.refused[0]), c.refused[1])
            limits = self.limits[c.split]
            data = read_candidate(c, self.s3, self.retries, limits, self.cwd)
            rgb, channels = decode_image(data, limits=limits)
            del data
            return Accepted(pixel_sha256(rgb), rgb.shape[1], rgb.shape[0], channels, encode_png(rgb))
        except Rejected as rej:
            return rej
        except Exception as exc:  # noqa: BLE001 - one item's failure is its own, never the run's
            return Rejected(RejectReason.UNREADABLE, f"{type(exc).__name__}: {exc}"[:300])


@functools.lru_cache(maxsize=4)
def _s3_client(settings: str, retries: int):
    # One per worker process (a client takes ~50 ms to make), keyed by the settings as JSON.
    return s3lib.client(S3Config.model_validate_json(settings), retries=retries)


def read_candidate(c: Candidate, s3cfg: S3Config, retries: int, limits: DecodeLimits, cwd: str = ".") -> bytes:
    """A candidate's bytes; its size is checked before anything is read."""
    if not s3lib.is_s3(c.uri):
        return read_file(os.path.join(cwd, c.uri), limits)
    if c.size > limits.max_bytes:
        raise Rejected(RejectReason.FILE_TOO_LARGE, f"{c.size} bytes exceeds max_bytes={limits.max_bytes}")
    try:
        data = s3lib.read_object(_s3_client(s3cfg.model_dump_json(), retries), c.uri, limit=limits.max_bytes + 1)
    except s3lib.ObjectUnreadable as exc:
        raise Rejected(RejectReason.UNREADABLE, str(exc)) from None
    if len(data) > limits.max_bytes:
        raise Rejected(RejectReason.FILE_TOO_LARGE, f"more than max_bytes={limits.max_bytes} bytes")
    return data
