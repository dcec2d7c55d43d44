"""S3 access through boto3: the standard credential chain, an endpoint for S3-compatible stores."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from pipelines.common.schema import S3Config


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
        return cls(parsed.netloc, parsed.path.lstrip("/"))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def client(cfg: S3Config, retries: int = 4):
    """A boto3 S3 client; credentials come from the environment/profile chain, never params."""
    boto_cfg = BotoConfig(
        retries={"max_attempts": retries + 1, "mode": "adaptive"},  # exponential backoff with jitter
        s3={"addressing_style": "path" if cfg.endpoint_url else "auto"},
        max_pool_connections=32,
    )
    return boto3.client("s3", endpoint_url=cfg.endpoint_url, region_name=cfg.region, config=boto_cfg)


def list_objects(s3, uri: str) -> Iterator[tuple[str, int]]:
    """(s3:// URI, size) of every object under the prefix, paginated, directory markers skipped."""
    loc = S3Uri.parse(uri)
    prefix = loc.key if not loc.key or loc.key.endswith("/") else loc.key + "/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/"):
                yield f"s3://{loc.bucket}/{obj['Key']}", int(obj["Size"])


class ObjectUnreadable(Exception):
    """One object could not be read (denied, gone, or the store failed on it): ``Code: message``."""


def read_object(s3, uri: str, limit: int | None = None) -> bytes:
    """An object's bytes (at most ``limit``); a per-object failure raises ObjectUnreadable."""
    loc = S3Uri.parse(uri)
    try:
        body = s3.get_object(Bucket=loc.bucket, Key=loc.key)["Body"]
        try:
            return body.read(limit) if limit is not None else body.read()
        finally:
            body.close()
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "error")
        raise ObjectUnreadable(f"{code}: {err.get('Message') or exc}"[:300]) from None
    except BotoCoreError as exc:  # the connection failed on this object after every retry
        raise ObjectUnreadable(f"{type(exc).__name__}: {exc}"[:300]) from None


def export_endpoint(cfg: S3Config) -> None:
    """Tell the libraries that reach S3 on their own (MLflow's artifact store, boto3 in DVC and
    s3fs) where an S3-compatible store is; a value already in the environment wins."""
    from pipelines.common.env import set_defaults

    if cfg.endpoint_url:
        set_defaults({"MLFLOW_S3_ENDPOINT_URL": cfg.endpoint_url, "AWS_ENDPOINT_URL_S3": cfg.endpoint_url})
    if cfg.region:
        set_defaults({"AWS_DEFAULT_REGION": cfg.region})
