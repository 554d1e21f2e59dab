"""``python -m lmforge``: the same as the ``lmforge`` console script."""

from lmforge.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
