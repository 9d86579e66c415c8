"""JSON and id helpers shared by the store's entity mixins.

Entity columns that hold dicts (architecture, hyperparams, event data) are JSON text; these
helpers make the round trip safe (non-finite floats become null) in one place.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any
from uuid import uuid4


def json_safe(value: Any) -> Any:
    """Replace non-finite floats (not valid JSON) by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps(value: Any) -> str:
    return json.dumps(json_safe(value), default=str)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def new_id(prefix: str) -> str:
    return prefix + uuid4().hex
