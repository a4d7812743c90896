"""`python -m kprune`: the `kprune` command (`kprune.cli.main`)."""

import sys

from kprune.cli.main import main

sys.exit(main())
