"""Put the table that `coretune table` wrote into README.md (between the results markers):
accuracy, the paper's rows, and what each run selected, how long its stages took and their
peak memory (from the runs' manifests).

    python scripts/readme_results.py runs/results      # after bash scripts/results.sh
"""

import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
runs = Path(sys.argv[1])
block = (runs / "table.md").read_text().strip()
readme = root / "README.md"
text = readme.read_text()
new, n = re.subn(r"(<!-- results:start[^>]*-->\n).*?(<!-- results:end -->)",
                 lambda m: m.group(1) + block + "\n" + m.group(2), text, flags=re.S)
if n != 1:
    sys.exit("README.md has no results markers")
readme.write_text(new)
print(f"README.md results replaced from {runs / 'table.md'}")
