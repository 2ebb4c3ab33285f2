"""`python -m artifex_agent` runs the CLI."""

import sys

from artifex_agent.cli.main import main

sys.exit(main())
