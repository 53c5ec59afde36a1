"""``python -m gmim.cli`` (and ``torchrun -m gmim.cli``): the ``gmim`` command."""

import sys

from gmim.cli import main

sys.exit(main())
