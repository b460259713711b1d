"""`python -m lstm_lab ...`: see lstm_lab.cli."""
import sys

from lstm_lab.cli import main

sys.exit(main())
