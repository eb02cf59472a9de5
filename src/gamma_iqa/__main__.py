"""`python -m gamma_iqa`: the command line (also what torchrun runs: `torchrun ... -m gamma_iqa score ...`)."""

import sys

from .cli import main

sys.exit(main())
