"""Store a run's results.json here, small: `python tests/data/recorded_runs/record.py PROFILE FILE`.

Numeric lists longer than 64 values are shortened to 64 (every 1/k-th value): the renderer
reads them only for the collapsible blocks; every other field is kept as recorded.
"""

import json
import sys
from pathlib import Path

KEEP = 64


def shrink(value):
    if isinstance(value, dict):
        return {k: shrink(v) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) > KEEP and all(isinstance(v, (int, float)) or v is None for v in value):
            step = -(-len(value) // KEEP)
            return value[::step]
        return [shrink(v) for v in value]
    return value


if __name__ == "__main__":
    profile, path = sys.argv[1], Path(sys.argv[2])
    out = Path(__file__).parent / f"{profile}.json"
    out.write_text(json.dumps(shrink(json.loads(path.read_text())), indent=0) + "\n")
    print(out, out.stat().st_size)
