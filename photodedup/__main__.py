"""`python -m photodedup` runs the CLI."""

from photodedup.cli import main

main()
