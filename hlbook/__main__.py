"""``python -m hlbook`` runs the command line."""

import sys

from hlbook.cli import main

sys.exit(main())
