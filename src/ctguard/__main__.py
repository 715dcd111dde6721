"""`python -m ctguard`: the same as the `ctguard` command (handy from a virtualenv or a checkout)."""

from ctguard.cli import main

main()
