"""`python -m hello_cli`: the same as the `hello` script."""

from hello_cli import main

main()
