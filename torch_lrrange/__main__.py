"""``python -m torch_lrrange``: see :mod:`torch_lrrange._cli`."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
