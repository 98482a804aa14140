"""Friendly container names (``curious_lovelace``), as Docker gives them."""

from __future__ import annotations

ADJECTIVES = (
    "brave", "calm", "clever", "curious", "eager", "gentle", "happy", "jolly", "keen",
    "kind", "lively", "lucid", "merry", "nimble", "patient", "proud", "quick", "quiet",
    "sharp", "steady", "sunny", "swift", "tidy", "witty",
)  # fmt: skip
PEOPLE = (
    "babbage", "hopper", "lovelace", "turing", "ritchie", "thompson", "torvalds", "knuth",
    "dijkstra", "hamilton", "liskov", "allen", "goldberg", "kernighan", "mccarthy", "noether",
    "curie", "shannon", "backus", "wirth", "lamport", "perlman", "stallman", "pike",
)  # fmt: skip


def generate(seed_hex: str) -> str:
    """A name derived from a container ID (the ID's tail keeps it unique)."""
    n = int(seed_hex[:8], 16)
    return f"{ADJECTIVES[n % len(ADJECTIVES)]}_{PEOPLE[(n >> 8) % len(PEOPLE)]}_{seed_hex[-4:]}"
