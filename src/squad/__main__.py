"""`python -m squad` runs the CLI."""

from squad.entry import main

main()
