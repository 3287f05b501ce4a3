"""Long history benchmark: balance reads, `ledger verify` and a statement export over an account with a million
postings. See scripts/throughput/long_history.py.

    python3 scripts/long_history.py [--postings 1000000] [--reads 2000] [--keep]
"""

from __future__ import annotations

import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))

from scripts.throughput.long_history import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
