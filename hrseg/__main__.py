"""``python -m hrseg``: the same entry point as the ``hrseg`` console script."""

from hrseg.commands import main

if __name__ == "__main__":
    raise SystemExit(main())
