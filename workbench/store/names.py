"""Readable default run names (``brave-otter-07``), as MLflow names runs it was not given a
name for: an adjective, a noun and two digits, picked from the run id so a name is stable (the
migration that names older runs gives each the name it would have had)."""

from __future__ import annotations

import hashlib

ADJECTIVES = (
    "amber", "bold", "brave", "bright", "calm", "clever", "crisp", "dapper", "eager", "fancy",
    "gentle", "glad", "golden", "grand", "happy", "honest", "jolly", "keen", "kind", "lively",
    "lucky", "mellow", "merry", "nimble", "noble", "placid", "polite", "proud", "quick",
    "quiet", "rapid", "silent", "silver", "sleek", "smooth", "sunny", "swift", "tidy", "vivid",
    "warm", "wise", "witty", "zesty",
)
NOUNS = (
    "badger", "bear", "bee", "bison", "crane", "crow", "deer", "dove", "eagle", "elk", "falcon",
    "finch", "fox", "frog", "gull", "hare", "hawk", "heron", "ibis", "jay", "koala", "lark",
    "lemur", "lynx", "mole", "moose", "newt", "otter", "owl", "panda", "puffin", "quail",
    "raven", "robin", "seal", "shrew", "snail", "stork", "swan", "tiger", "toad", "trout",
    "vole", "wolf", "wren", "yak",
)


def default_run_name(run_id: str) -> str:
    """``adjective-noun-NN``, derived from ``run_id`` (same id, same name)."""
    digest = hashlib.sha256(run_id.encode()).digest()
    adjective = ADJECTIVES[int.from_bytes(digest[0:4], "big") % len(ADJECTIVES)]
    noun = NOUNS[int.from_bytes(digest[4:8], "big") % len(NOUNS)]
    return f"{adjective}-{noun}-{digest[8] % 100:02d}"
