"""`python -m diagnose.cli`: the same as the `diagnose` console script."""

from .app import main

if __name__ == "__main__":
    main()
