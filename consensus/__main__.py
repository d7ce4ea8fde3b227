"""``python -m consensus``: run and use real clusters (``consensus.runtime.cli``)."""

import sys

from consensus.runtime.cli import main

if __name__ == "__main__":
    sys.exit(main())
