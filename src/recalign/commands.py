"""Subcommands beyond `data`: pretrain, evaluate, recommend, posttrain, theory, demo (filled in as
the issues land)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the model subcommands to the `recalign` parser."""
