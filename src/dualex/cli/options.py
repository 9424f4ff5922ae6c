"""``KEY=VALUE`` options on the command line, shared by every subcommand."""

from __future__ import annotations

import argparse
import json


def parse_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> ``(key, value)``, the value parsed as JSON where it is JSON (used by all subcommands)."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"options are KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value
