"""`python -m diagnose.cli`: the same as the `diagnose` console script (the package guards its imports
against Ctrl-C)."""

from . import main

if __name__ == "__main__":
    main()
