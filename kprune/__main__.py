import sys

from kprune.cli import main

sys.exit(main())
