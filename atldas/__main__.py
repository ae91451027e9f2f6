"""``python -m atldas`` runs the command-line tool."""

import sys

from atldas.cli import main

sys.exit(main())
