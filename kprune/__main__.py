import sys

from kprune.cli.main import main

sys.exit(main())
