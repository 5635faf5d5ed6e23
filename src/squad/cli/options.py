"""Typer option types several commands share (kept out of `squad.cli.common`, which commands answered
without Typer use too: docs/benchmarks.md "CLI")."""

from __future__ import annotations

from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
