"""``python -m lmdownstream table ...``: see :mod:`lmdownstream.cli`."""
import sys

from lmdownstream.cli import main

if __name__ == "__main__":
    sys.exit(main())
