"""Put generated results between their markers in docs/results.md and README.md; nothing in
them is typed by hand.

    python scripts/readme_results.py runs/results              # after bash scripts/results.sh
    python scripts/readme_results.py --sweep runs/laptop-sweep # after coretune sweep
    python scripts/readme_results.py --marker lora benchmarks/results/lora_vs_full  # a table.md
    python scripts/readme_results.py --readme decontam benchmarks/results/bench_decontam.md
    python scripts/readme_results.py --into docs/measurement.md control-nli \
        benchmarks/results/bench_control.md                 # any markdown, any page

Results: the table that `coretune table` wrote (accuracy, the paper's rows, what each run
selected, its stage times and peak memory), into docs/results.md. Sweep: the sweep's sweep.md
(points, baselines, knee, power, paired Δs, predictors), its budget-curve figures (copied to
docs/) and the CPU seconds its stages took, summed from their manifests, into docs/results.md;
and the README's headline, a short summary read from the sweep's sweep.json.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
README = root / "README.md"
RESULTS = root / "docs" / "results.md"
# sweep figure -> its copy in docs/ (results.md links the copies)
FIGURES = {"report_accuracy_vs_budget.png": "laptop_sweep.png",
           "report_log_loss_vs_budget.png": "laptop_sweep_logloss.png"}


def replace(path: Path, marker: str, block: str) -> None:
    text = path.read_text(encoding="utf-8")
    new, n = re.subn(rf"(<!-- {marker}:start[^>]*-->\n).*?(<!-- {marker}:end -->)",
                     lambda m: m.group(1) + block.strip() + "\n" + m.group(2), text, flags=re.S)
    if n != 1:
        sys.exit(f"{path.name} has no {marker} markers")
    path.write_text(new, encoding="utf-8")


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
    md = re.sub(r"^## ", "### ", md, flags=re.M)
    lines = [md.strip(), ""]
    for name, copy in FIGURES.items():
        if (folder / name).is_file():
            shutil.copyfile(folder / name, root / "docs" / copy)
            what = name.removeprefix("report_").removesuffix(".png").replace("_", " ")
            lines += [f"![{what.capitalize()}]({copy})", ""]
    secs = stage_seconds(folder)
    total = sum(secs.values())
    parts = ", ".join(f"{k} {v / 60:.0f}" for k, v in sorted(secs.items(), key=lambda kv: -kv[1]))
    lines.append(f"Stage time of the whole sweep, summed from its manifests: {total / 3600:.2f} h "
                 f"({parts} min).")
    return "\n".join(lines)


def headline_block(doc: dict) -> str:
    """The README's summary of a sweep.json: the positive control, the power of both metrics,
    and per point its Δs against the untuned model (and random) and what it cost."""
    from coretune.report.sweep import _power_lines
    from coretune.stats import ACCURACY, LOGLOSS, Delta

    def delta(d: dict | None, digits: int) -> str:
        return "–" if not d else Delta(**d["avg"]).text(digits)

    def secs(v) -> str:
        return "–" if v is None else f"{v:,.0f}"

    lines = [doc["control"]["text"], "",
             *_power_lines(doc["power"], ACCURACY),
             *_power_lines(doc["power_logloss"] or {}, LOGLOSS), "",
             "| point | rows | Δ log-loss vs untuned (nats) | Δ accuracy vs untuned (points) "
             "| Δ log-loss vs random | select s | train s |", "|---|---:|---|---|---|---:|---:|"]
    for p in doc["points"]:
        c = p["cost"]
        lines.append(f"| {p['label']} | {p['rows']:,} | "
                     f"{delta(p['vs_untuned_logloss'], LOGLOSS.digits)} | "
                     f"{delta(p['vs_untuned'], ACCURACY.digits)} | "
                     f"{delta(p['vs_random_logloss'], LOGLOSS.digits)} | "
                     f"{secs(c['select_seconds'])} | {secs(c['train_seconds'])} |")
    lines += ["", "Every Δ is paired on the same examples and seeds (95% interval, sign-flip p); "
              "+ is better for both metrics. All tables: [docs/results.md](docs/results.md)."]
    return "\n".join(lines)


def main(args: list[str]) -> None:
    if args[:1] == ["--sweep"]:
        folder = Path(args[1])
        replace(RESULTS, "sweep", sweep_block(folder))
        replace(README, "headline", headline_block(json.loads((folder / "sweep.json").read_text())))
        print(f"docs/results.md sweep and README.md headline replaced from {folder}")
        return
    if args[:1] in (["--readme"], ["--into"]):  # [--into PAGE | --readme] NAME FILE
        page, (name, file) = (Path(args[1]), args[2:4]) if args[0] == "--into" else (README,
                                                                                      args[1:3])
        # a page's own title stays its only H1: the file's title becomes a bold line
        replace(page, name, re.sub(r"^# (.+)$", r"**\1**", Path(file).read_text(), flags=re.M))
        print(f"{page.name} {name} replaced from {file}")
        return
    # [--marker NAME] FOLDER: that folder's table.md between NAME's markers
    marker, runs = (args[1], Path(args[2])) if args[0] == "--marker" else ("results", Path(args[0]))
    replace(RESULTS, marker, (runs / "table.md").read_text())
    print(f"docs/results.md {marker} replaced from {runs / 'table.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
