"""report.html (one self-contained file, plots embedded as PNG) and report.md."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from coretune.errors import CoretuneError  # noqa: E402
from coretune.io import write_bytes, write_text  # noqa: E402
from coretune.report.table import HEADERS, LOGLOSS_TITLE, TASKS, to_markdown  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def plot_rows(rows: list[dict], title: str) -> bytes:
    """Avg accuracy per row with its 95% interval (used for the sampler ablation and overall)."""
    rows = [r for r in rows if "avg" in r["cells"]]
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(rows) + 2), 3.2))
    means = [r["cells"]["avg"].mean for r in rows]
    err = np.array([[r["cells"]["avg"].mean - r["cells"]["avg"].lo,
                     r["cells"]["avg"].hi - r["cells"]["avg"].mean] for r in rows]).T
    ax.bar(range(len(rows)), means, yerr=err if len(rows) else None, capsize=4,
           color="#4c72b0")
    ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("avg accuracy % (95% CI)")
    ax.set_title(title)
    return _png(fig)


def plot_sweep(curves: dict[str, list[tuple[float, float, float, float]]],
               knees: dict[str, float | None], untuned: float | None = None,
               majority: float | None = None,
               xlabel: str = "training rows, % of pool (log)",
               ylabel: str = "avg accuracy % (95% band)", what: str = "accuracy") -> bytes | None:
    """Accuracy (or `what`) vs budget (log x) from a sweep: per method a line with its 95% band
    (`curves`: method -> [(budget % of pool, mean, lo, hi)]), its knee ringed, the untuned
    model and the majority-class baseline as horizontal lines. None when no method has two
    budgets: one point is not a curve."""
    if not any(len(pts) > 1 for pts in curves.values()):
        return None
    fig, ax = plt.subplots(figsize=(6, 3.8))
    colours = plt.get_cmap("tab10")
    for i, (method, pts) in enumerate(sorted(curves.items())):
        pts = sorted(pts)
        x, mean, lo, hi = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
        ax.plot(x, mean, marker="o", color=colours(i), label=method)
        ax.fill_between(x, lo, hi, color=colours(i), alpha=0.2, linewidth=0)
        k = knees.get(method)
        if k is not None and k in x:
            y = mean[list(x).index(k)]
            ax.scatter([k], [y], s=160, facecolors="none", edgecolors=colours(i),
                       linewidths=2, zorder=3)
            ax.annotate("knee", (k, y), textcoords="offset points", xytext=(6, -14),
                        fontsize=8, color=colours(i))
    if untuned is not None:
        ax.axhline(untuned, color="black", ls="--", lw=1, label="untuned model")
    if majority is not None:
        ax.axhline(majority, color="grey", ls=":", lw=1, label="majority class")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.set_title(f"{what} vs budget" + (" (knee ringed)" if knees else ""))
    return _png(fig)


def plot_map(xy: np.ndarray, families: list[str], target: np.ndarray,
             selected: np.ndarray | None = None) -> bytes:
    """2-D map of pool embeddings coloured by task family; target-cluster rows ringed."""
    fig, ax = plt.subplots(figsize=(6.5, 5))
    names = sorted(set(families))
    fam = np.array(families)
    cmap = plt.get_cmap("tab20")
    for i, name in enumerate(names):
        m = fam == name
        ax.scatter(xy[m, 0], xy[m, 1], s=4, color=cmap(i % 20), label=name, alpha=0.6,
                   linewidths=0)
    ax.scatter(xy[target, 0], xy[target, 1], s=14, facecolors="none", edgecolors="black",
               linewidths=0.3, label="in target clusters")
    if selected is not None and selected.any():
        ax.scatter(xy[selected, 0], xy[selected, 1], s=30, marker="*", color="red",
                   label="selected")
    ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("pool embeddings (PCA) by task family")
    return _png(fig)


def plot_radius(radius: np.ndarray, clusters: np.ndarray) -> bytes:
    """KCenterGreedy coverage radius after each selected centre, one line per target cluster."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for c in np.unique(clusters):
        r = radius[clusters == c]
        ax.plot(np.arange(1, len(r) + 1), r, lw=1, label=f"cluster {c}")
    ax.set_xlabel("centres selected in the cluster")
    ax.set_ylabel("coverage radius")
    if len(np.unique(clusters)) <= 10:
        ax.legend(fontsize=7)
    ax.set_title("k-center coverage radius")
    return _png(fig)


def plot_coverage(curves: dict[str, tuple[list[int], list[float]]]) -> bytes:
    """`curves`: run -> (rows selected, mean distance from a target row to its nearest
    selected row): how fast each selection covers the target, no training needed."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, (n, mean) in sorted(curves.items()):
        ax.plot(n, mean, marker=".", lw=1, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("rows selected (log)")
    ax.set_ylabel("mean distance to nearest pick")
    ax.legend(fontsize=7)
    ax.set_title("coverage of the target rows")
    return _png(fig)


def _cell_html(c) -> str:
    d = c.digits
    return f"<td>{c.mean:.{d}f}<br><small>[{c.lo:.{d}f}, {c.hi:.{d}f}]</small></td>"


def _table_html(rows: list[dict], tasks=TASKS) -> str:
    cols = [*tasks, "avg"]
    head = "".join(f"<th>{HEADERS.get(c, c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = "".join(_cell_html(r["cells"][c]) if c in r["cells"] else "<td>–</td>"
                        for c in cols)
        n = max((c.n_seeds for c in r["cells"].values()), default=0)
        body.append(f"<tr><th>{html.escape(r['name'])}</th><td>{n}</td>{cells}</tr>")
    return (f"<table><tr><th>Row</th><th>seeds</th>{head}</tr>{''.join(body)}</table>")


def _plain_table(rows: list[dict]) -> tuple[str, str]:
    """A list of flat dicts (same keys) as an HTML table and a Markdown table."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cell = [[str(r.get(c, "")) for c in cols] for r in rows]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>"
                   for r in cell)
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(v.replace("|", "/") for v in r) + " |" for r in cell]
    return f"<table class='facts'><tr>{head}</tr>{body}</table>", "\n".join(md)


CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:center}img{max-width:100%;display:block;margin:1em 0}
.facts td{text-align:left}small{color:#666}"""


def write_report(out_dir: Path, title: str, rows: list[dict], figures: dict[str, bytes],
                 tables: dict[str, list[dict]], notes: list[str] = (),
                 loss_rows: list[dict] = ()) -> tuple[Path, Path]:
    """Write report.html (self-contained) and report.md (+ PNGs next to it) into `out_dir`.
    `tables`: title -> rows (flat dicts) shown after the figures, e.g. the run facts;
    `loss_rows`: the gold-option log-loss table, after the accuracy table."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             "<h2>Results</h2><p>Accuracy % on each evaluation set, mean over seeds with a 95% "
             "bootstrap interval over seeds and examples.</p>", _table_html(rows)]
    md = [f"# {title}\n", "## Results\n", to_markdown(rows)]
    if loss_rows:
        parts += [f"<p>{html.escape(LOGLOSS_TITLE)}</p>", _table_html(list(loss_rows))]
        md.append(f"\n{LOGLOSS_TITLE}\n\n{to_markdown(list(loss_rows), paper=False)}")
    for note in notes:
        parts.append(f"<p>{html.escape(note)}</p>")
        md.append(f"\n{note}\n")
    for name, png in figures.items():
        b64 = base64.b64encode(png).decode()
        parts.append(f"<h2>{html.escape(name)}</h2><img alt='{html.escape(name)}' "
                     f"src='data:image/png;base64,{b64}'>")
        file = "report_" + "".join(ch if ch.isalnum() else "_" for ch in name.lower()) + ".png"
        write_bytes(out_dir / file, png)
        md.append(f"\n## {name}\n\n![{name}]({file})\n")
    for name, table in tables.items():
        if table:
            t_html, t_md = _plain_table(table)
            parts.append(f"<h2>{html.escape(name)}</h2>{t_html}")
            md.append(f"\n## {name}\n\n{t_md}\n")
    parts.append("</body></html>")
    write_text(out_dir / "report.html", "".join(parts))
    write_text(out_dir / "report.md", "\n".join(md) + "\n")
    return out_dir / "report.html", out_dir / "report.md"


def screenshot(page: Path, png: Path, width: int = 1200, height: int = 3000) -> Path:
    """Render `page` in headless Chromium and save a PNG (to check that the report renders)."""
    import shutil
    import subprocess
    import tempfile

    browser = shutil.which("chromium") or shutil.which("chromium-browser") \
        or shutil.which("google-chrome")
    if browser is None:
        raise CoretuneError("no headless browser found (install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={png}",
             f"--window-size={width},{height}", Path(page).resolve().as_uri()],
            check=True, capture_output=True, timeout=120)
    return png
