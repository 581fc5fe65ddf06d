"""`python -m bulkusers` is the `bulkusers` command."""

from bulkusers.cli import main

main()
