"""atheris target "replay": recordings replayed through web10g.open(replay=) (see
fuzz_recording.py for the input's layout)."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402
import fuzz_recording  # noqa: E402

if __name__ == "__main__":
    _harness.main("replay", lambda: fuzz_recording.setup(replay=True))
