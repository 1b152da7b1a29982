"""What the commands print: strict JSON, and log lines on stderr."""

from __future__ import annotations

import json
import math
import sys
from typing import Any


def json_text(data: Any) -> str:
    """Strict JSON: a measurement that could not be made (NaN) is written as null."""
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value
    return json.dumps(clean(data), indent=2, allow_nan=False)


def log(message: str) -> None:
    """One line on stderr, flushed: progress and what a command did."""
    print(message, file=sys.stderr, flush=True)
