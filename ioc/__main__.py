"""``python -m ioc`` is the ``ioc`` command."""

from .cli import main

main()
