"""Put the table that `coretune table` wrote into README.md (between the results markers),
with what each run selected and how long its stages took (from the runs' manifests).

    python scripts/readme_results.py runs/results      # after bash scripts/results.sh
"""

import re
import sys
from pathlib import Path

from coretune.summary import collect, find_runs

root = Path(__file__).resolve().parents[1]
runs = Path(sys.argv[1])
table = (runs / "table.md").read_text().strip()
_, facts = collect(find_runs([runs]))
lines = ["| config | seeds | rows trained on (of pool) | stage time, all seeds (s) |",
         "|---|---|---|---|"]
for f in facts:
    pool = f" (of {f['pool_rows']:,})" if f["pool_rows"] else ""
    secs = ", ".join(f"{k} {v:.0f}" for k, v in f["seconds"].items() if v >= 1)
    lines.append(f"| `{Path(f['run']).name}` | {len(f['seeds'])} | {f['selected']:,}{pool} | "
                 f"{sum(f['seconds'].values()):.0f}: {secs} |")
block = table + "\n\n" + "\n".join(lines)
readme = root / "README.md"
text = readme.read_text()
new, n = re.subn(r"(<!-- results:start[^>]*-->\n).*?(<!-- results:end -->)",
                 lambda m: m.group(1) + block + "\n" + m.group(2), text, flags=re.S)
if n != 1:
    sys.exit("README.md has no results markers")
readme.write_text(new)
print(f"README.md results replaced from {runs / 'table.md'}")
