"""`python -m api.cli`: the same as the `patron` command."""

from api.cli import main

main()
