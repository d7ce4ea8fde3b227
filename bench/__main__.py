import sys

from bench.cli import main
from consensus.runtime.cli import tune_gc

# The command's own process: collect garbage as a node process does.
tune_gc()
sys.exit(main())
