"""`python -m squad` runs the CLI."""

from squad.cli import main

main()
