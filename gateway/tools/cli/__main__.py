"""`python -m gateway.tools.cli`: the `switchyard` command."""

import sys

from gateway.tools.cli import main

sys.exit(main())
