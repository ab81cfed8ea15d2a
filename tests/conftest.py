import sys
from pathlib import Path

# Make `tests.vectors` importable as `vectors` from any test folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))
