"""`python -m regwarden` is the `regwarden` command."""

from .cli import main

main()
