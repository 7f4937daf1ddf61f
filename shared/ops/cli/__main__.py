"""`python -m shared.ops.cli`: the modelbus command line."""

from __future__ import annotations

from shared.ops.cli import main

if __name__ == "__main__":
    main()
