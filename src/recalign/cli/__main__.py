"""`python -m recalign.cli` (and `torchrun -m recalign.cli`): the `recalign` command."""

import sys

from recalign.cli import main

sys.exit(main())
