"""Reusable test factories (live servers, tiny models)."""
