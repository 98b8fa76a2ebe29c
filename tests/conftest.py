import os
import sys

# Scenario tests import the harness next to them.
sys.path.insert(0, os.path.dirname(__file__))
