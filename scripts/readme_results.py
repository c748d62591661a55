"""Put generated results into README.md, between its markers; nothing in them is typed by hand.

    python scripts/readme_results.py runs/results              # after bash scripts/results.sh
    python scripts/readme_results.py --sweep runs/laptop-sweep # after coretune sweep
    python scripts/readme_results.py --marker lora runs/lora-vs-full  # any marker, a table.md

Results: the table that `coretune table` wrote (accuracy, the paper's rows, what each run
selected, its stage times and peak memory). Sweep: the sweep's sweep.md (points, baselines,
knee, power, paired Δs, predictors), its budget-curve figure (copied to docs/), and the CPU
seconds its stages took, summed from their manifests.
"""

import json
import re
import shutil
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
readme = root / "README.md"


def replace(marker: str, block: str) -> None:
    text = readme.read_text()
    new, n = re.subn(rf"(<!-- {marker}:start[^>]*-->\n).*?(<!-- {marker}:end -->)",
                     lambda m: m.group(1) + block.strip() + "\n" + m.group(2), text, flags=re.S)
    if n != 1:
        sys.exit(f"README.md has no {marker} markers")
    readme.write_text(new)


def stage_seconds(folder: Path) -> dict[str, float]:
    """Seconds per stage over every manifest under the sweep folder."""
    out: dict[str, float] = {}
    for m in folder.rglob("manifest.json"):
        d = json.loads(m.read_text())
        if "stage" in d and "seconds" in d:
            out[d["stage"]] = out.get(d["stage"], 0.0) + float(d["seconds"])
    return out


def sweep_block(folder: Path) -> str:
    md = (folder / "sweep.md").read_text().split("\n", 1)[1]  # without its H1 title
    md = re.sub(r"^## ", "#### ", md, flags=re.M)
    fig = folder / "report_accuracy_vs_budget.png"
    lines = [md.strip(), ""]
    if fig.is_file():
        (root / "docs").mkdir(exist_ok=True)
        shutil.copyfile(fig, root / "docs" / "laptop_sweep.png")
        lines += ["![Accuracy vs budget](docs/laptop_sweep.png)", ""]
    secs = stage_seconds(folder)
    total = sum(secs.values())
    parts = ", ".join(f"{k} {v / 60:.0f}" for k, v in sorted(secs.items(), key=lambda kv: -kv[1]))
    lines.append(f"Stage time of the whole sweep, summed from its manifests: {total / 3600:.2f} h "
                 f"({parts} min).")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sweep"]:
        replace("sweep", sweep_block(Path(sys.argv[2])))
        print(f"README.md sweep replaced from {sys.argv[2]}")
    else:  # [--marker NAME] FOLDER: that folder's table.md between NAME's markers
        marker, runs = (sys.argv[2], Path(sys.argv[3])) if sys.argv[1] == "--marker" else (
            "results", Path(sys.argv[1]))
        replace(marker, (runs / "table.md").read_text())
        print(f"README.md {marker} replaced from {runs / 'table.md'}")
