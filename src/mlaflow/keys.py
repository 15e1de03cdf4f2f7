"""How results are named and identified: missing-rate labels in file names, metric keys, config hashes.

A leaf module (no mlaflow imports): every job uses it, so it changes rarely and never drags other code into a
job's code inputs (mlaflow.pipeline.codedeps).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def format_rate(rate: float) -> str:
    """Missing rate as it appears in file names: 0.3 -> '0.30'."""
    return f"{rate:.2f}"


def rate_key(rate: float) -> str:
    """Missing rate as a DVC metric key (no dots allowed): 0.3 -> 'r30'."""
    return f"r{round(rate * 100):02d}"


def config_hash(obj: Any) -> str:
    """Short, stable hash of a JSON-serialisable object (a job's config)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
