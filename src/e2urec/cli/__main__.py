"""``python -m e2urec.cli``: the ``e2urec`` command (as ``accelerate launch -m`` runs it)."""

import sys

from e2urec.cli import main

sys.exit(main())
