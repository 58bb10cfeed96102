"""The ``--store`` options every recorder and audit command shares, and opening that store."""

from __future__ import annotations

import argparse
import os

from .config import RecorderConfig
from .store import Store, open_store


def store_args(p: argparse.ArgumentParser) -> None:
    d = RecorderConfig()
    p.add_argument("--store", default=os.environ.get("PGWITNESS_STORE", d.store),
                   help="file:///dir, a directory, or s3://bucket/prefix (env PGWITNESS_STORE)")
    p.add_argument("--s3-endpoint", default=os.environ.get("PGWITNESS_S3_ENDPOINT"),
                   help="S3-compatible endpoint URL (env PGWITNESS_S3_ENDPOINT)")
    p.add_argument("--s3-region", default=os.environ.get("AWS_REGION"))


def open_from_args(args: argparse.Namespace) -> Store:
    if args.store.startswith("s3://"):
        return open_store(args.store, endpoint_url=args.s3_endpoint, region=args.s3_region)
    return open_store(args.store)
