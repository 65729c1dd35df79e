"""``python -m lstmgen``: the same as the ``lstmgen`` command."""

import sys

from lstmgen.cli import main

sys.exit(main())
