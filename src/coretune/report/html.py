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
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from coretune.errors import CoretuneError  # noqa: E402
from coretune.io import write_bytes, write_text  # noqa: E402
from coretune.report.compare import delta_unit, paired_markdown  # noqa: E402
from coretune.report.table import HEADERS, LOGLOSS_TITLE, TASKS, to_markdown  # noqa: E402
from coretune.stats import ACCURACY, Metric  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _baseline_lines(ax, majority: float | None, chance: float | None) -> None:
    """Drawn over the bars, so a bar that reaches only the baseline shows it."""
    if majority is not None:
        ax.axhline(majority, color="black", ls=":", lw=1.5, zorder=3,
                   label=f"majority class {majority:.1f}")
    if chance is not None:
        ax.axhline(chance, color="dimgrey", ls="--", lw=1, zorder=3, label=f"chance {chance:.1f}")


def _log_x(ax) -> None:
    """Log x axis labelled 1, 2, 5, 10, 20, ... (not 10^0, 10^1)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.10g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_rows(rows: list[dict], title: str, majority: float | None = None,
              chance: float | None = None, marks: dict[str, str] | None = None) -> bytes:
    """Avg accuracy per row with its 95% interval (used for the sampler ablation and overall),
    with the majority-class and chance averages as lines when given; `marks`: row name ->
    text added to its label (ONE_CLASS for a row that predicts one class on some set)."""
    rows = [r for r in rows if "avg" in r["cells"]]
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(rows) + 2), 3.2))
    means = [r["cells"]["avg"].mean for r in rows]
    err = np.array([[r["cells"]["avg"].mean - r["cells"]["avg"].lo,
                     r["cells"]["avg"].hi - r["cells"]["avg"].mean] for r in rows]).T
    ax.bar(range(len(rows)), means, yerr=err if len(rows) else None, capsize=4,
           color="#4c72b0")
    _baseline_lines(ax, majority, chance)
    ax.set_xticks(range(len(rows)), [r["name"] + (marks or {}).get(r["name"], "")
                                     for r in rows], rotation=30, ha="right")
    ax.set_ylabel("avg accuracy % (95% CI)")
    ax.grid(axis="y", alpha=0.3)
    if majority is not None or chance is not None:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    ax.set_title(title)
    return _png(fig)


def plot_sweep(curves: dict[str, list[tuple[float, float, float, float]]],
               knees: dict[str, float | None], untuned: float | None = None,
               majority: float | None = None,
               xlabel: str = "training rows, % of pool (log)",
               ylabel: str = "avg accuracy % (95% band)", what: str = "accuracy",
               majority_label: str = "majority class") -> bytes | None:
    """Accuracy (or `what`) vs budget (log x) from a sweep: per method a line with its 95% band
    (`curves`: method -> [(budget % of pool, mean, lo, hi)]), its knee ringed, the untuned
    model and the majority-class baseline (or `majority_label`'s) as horizontal lines. None when
    no method has two budgets: one point is not a curve."""
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
        ax.axhline(majority, color="dimgrey", ls=":", lw=1.5, label=majority_label)
    _log_x(ax)
    ax.set_xticks(sorted({x for pts in curves.values() for x, *_ in pts}))  # the budgets
    ax.grid(alpha=0.3, which="both")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.set_title(f"{what} vs budget" + (" (knee ringed)" if knees else ""))
    return _png(fig)


# tab10 without its grey, which is kept for the "other" family
PALETTE = [plt.get_cmap("tab10")(i) for i in range(10) if i != 7]
MARKERS = "os^Dv<>Ph"
OTHER = "other"


def family_styles(names: list[str]) -> dict[str, tuple]:
    """(colour, marker) per family: every colour with the first marker, then every colour with
    the next marker, ...; no two families share both; "other" is grey."""
    named = sorted(n for n in set(names) if n != OTHER)
    out = {n: (PALETTE[i % len(PALETTE)], MARKERS[i // len(PALETTE) % len(MARKERS)])
           for i, n in enumerate(named)}
    if OTHER in names:
        out[OTHER] = ((0.6, 0.6, 0.6, 1.0), "o")
    return out


def plot_map(xy: np.ndarray, families: list[str], target: np.ndarray,
             selected: np.ndarray | None = None,
             explained: tuple[float, float] | None = None) -> bytes:
    """2-D map of pool embeddings coloured by task family; target-cluster rows ringed;
    `explained`: the share of variance on each axis (PCA), shown in the axis labels."""
    fig, ax = plt.subplots(figsize=(6.5, 5))
    fam = np.array(families)
    styles = family_styles(list(families))
    for name in [*(n for n in styles if n != OTHER), *([OTHER] if OTHER in styles else [])]:
        m = fam == name
        colour, marker = styles[name]
        ax.scatter(xy[m, 0], xy[m, 1], s=9 if name != OTHER else 6, color=colour,
                   marker=marker, label=f"{name} ({int(m.sum()):,})", alpha=0.7, linewidths=0,
                   zorder=1 if name == OTHER else 2)
    ax.scatter(xy[target, 0], xy[target, 1], s=22, facecolors="none", edgecolors="black",
               linewidths=0.4, label="in target clusters", zorder=3)
    if selected is not None and selected.any():
        ax.scatter(xy[selected, 0], xy[selected, 1], s=70, marker="*", color="gold",
                   edgecolors="black", linewidths=0.5, label="selected", zorder=4)
    ax.legend(fontsize=7, markerscale=1.6, loc="center left", bbox_to_anchor=(1, 0.5))
    pc = [f"PC{i + 1}" + (f" ({100 * explained[i]:.0f}% of variance)" if explained else "")
          for i in range(2)]
    ax.set_xlabel(pc[0])
    ax.set_ylabel(pc[1])
    ax.set_title("pool embeddings (PCA) by task family")
    return _png(fig)


def plot_radius(radius: np.ndarray, clusters: np.ndarray) -> bytes:
    """KCenterGreedy coverage radius after each selected centre, one line per target cluster."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for c in np.unique(clusters):
        r = radius[clusters == c]
        ax.plot(np.arange(1, len(r) + 1), r, lw=1, label=f"cluster {c}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("centres selected in the cluster")
    ax.set_ylabel("coverage radius")
    ax.grid(alpha=0.3)
    if len(np.unique(clusters)) <= 10:
        ax.legend(fontsize=7)
    ax.set_title("k-center coverage radius")
    return _png(fig)


def plot_coverage(curves: dict[str, dict[str, list]]) -> bytes:
    """`curves`: run -> {"n": rows selected, "radius": the largest distance from a target row
    to its nearest selected row (what k-center minimises), "mean": the mean of those
    distances}: how fast each selection covers the target, no training needed. Two panels
    side by side, one run one colour in both."""
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.2), sharex=True)
    colours = plt.get_cmap("tab10")
    for i, (name, c) in enumerate(sorted(curves.items())):
        for ax, key in zip(axes, ("radius", "mean"), strict=True):
            ax.plot(c["n"], c[key], marker=".", lw=1, color=colours(i % 10), label=name)
    for ax, what in zip(axes, ("radius: max distance to nearest pick",
                               "mean distance to nearest pick"), strict=True):
        _log_x(ax)
        ax.set_xlabel("rows selected (log)")
        ax.set_ylabel(what, fontsize=8)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title("k-center's objective (max)", fontsize=9)
    axes[1].set_title("mean (not what k-center minimises)", fontsize=9)
    axes[1].legend(fontsize=7)
    return _png(fig)


ONE_CLASS = "†"
ONE_CLASS_LEGEND = (f"{ONE_CLASS} predicts one class on every example of this set, on every "
                    f"seed ({ONE_CLASS}k/n: on k of n seeds): its accuracy there is that "
                    "class's share of the labels, not a skill.")
# per metric: the baselines shown under its table, (key in compare.baselines, row label,
# decimals)
BASELINE_ROWS = {"accuracy": (("majority", "majority class", 1), ("chance", "chance", 1)),
                 "logloss": (("prior_logloss", "label prior", 3),
                             ("uniform_logloss", "uniform", 3))}


def one_class(tables) -> dict[str, str]:
    """Per eval set, from each seed's predictions table (`task`, `pred`): the marker of a set
    on which a seed gives every example the same option, `ONE_CLASS` when every seed does,
    `ONE_CLASS`k/n when k of n do; sets where none does are left out, and so is every set of
    tables without `pred`."""
    counts: dict[str, int] = {}
    tables = list(tables)
    for t in tables:
        if "pred" not in t.column_names:
            return {}
        df = t.select(["task", "pred"]).to_pandas()
        for task, g in df.groupby("task", sort=False):
            counts[str(task)] = counts.get(str(task), 0) + int(g["pred"].nunique() == 1)
    n = len(tables)
    return {t: ONE_CLASS if k == n else f"{ONE_CLASS}{k}/{n}" for t, k in counts.items() if k}


def _columns(rows: list[dict]) -> list[str]:
    """The eval sets the rows have: the paper's in its order, then any others."""
    have = list(dict.fromkeys(t for r in rows for t in r["cells"] if t != "avg"))
    return [t for t in TASKS if t in have] + [t for t in have if t not in TASKS]


def _cell_html(c, mark: str = "") -> str:
    d = c.digits
    cls, mark = (" class='one'", f" {mark}") if mark else ("", "")
    return f"<td{cls}>{c.mean:.{d}f}{mark}<br><small>[{c.lo:.{d}f}, {c.hi:.{d}f}]</small></td>"


def _table_html(rows: list[dict], base: dict | None = None, kinds: tuple = (),
                marks: dict | None = None) -> str:
    """The accuracy (or log-loss) table; `base`: per eval set the baselines, of which `kinds`
    (BASELINE_ROWS) are added as rows, Avg their mean over the sets; `marks`: row name ->
    eval set -> marker (`one_class`)."""
    tasks = _columns(rows)
    cols = [*tasks, "avg"]
    head = "".join(f"<th>{HEADERS.get(c, c)}</th>" for c in cols)
    body = []
    for r in rows:
        mark = (marks or {}).get(r["name"], {})
        cells = "".join(_cell_html(r["cells"][c], mark.get(c, "")) if c in r["cells"]
                        else "<td>–</td>" for c in cols)
        n = max((c.n_seeds for c in r["cells"].values()), default=0)
        body.append(f"<tr><th>{html.escape(r['name'])}</th><td>{n}</td>{cells}</tr>")
    have = [t for t in tasks if t in (base or {})]
    for key, label, d in kinds if have else ():
        vals = {t: base[t][key] for t in have}
        vals["avg"] = float(np.mean(list(vals.values())))
        cells = "".join(f"<td>{vals[c]:.{d}f}</td>" if c in vals else "<td>–</td>"
                        for c in cols)
        body.append(f"<tr class='base'><th>{label}</th><td>–</td>{cells}</tr>")
    return f"<table><tr><th>Row</th><th>seeds</th>{head}</tr>{''.join(body)}</table>"


def _paired_html(reference: str, deltas: list[dict], metric: Metric) -> str:
    """Δ of every row against `reference` (compare.paired_rows), with intervals and p."""
    cols = [*_columns(deltas), "avg"]
    what = "" if metric is ACCURACY else f" {metric.label}"
    d = metric.digits

    def cell(x) -> str:
        sig = " class='sig'" if x.lo > 0 or x.hi < 0 else ""
        return (f"<td{sig}>{x.delta:+.{d}f}<br><small>[{x.lo:+.{d}f}, {x.hi:+.{d}f}]<br>"
                f"p={x.p:.3g}</small></td>")

    body = "".join(f"<tr><th>{html.escape(r['name'])}</th>" + "".join(
        cell(r["cells"][c]) if c in r["cells"] else "<td>–</td>" for c in cols) + "</tr>"
        for r in deltas)
    head = "".join(f"<th>{HEADERS.get(c, c)}</th>" for c in cols)
    unit = html.escape(delta_unit(metric) + ("; + = the row is better"
                                             if metric.higher_is_better else ""))
    return (f"<h3>Paired Δ{what} vs {html.escape(reference)}</h3><p>Δ in {unit}. 95% "
            "paired-bootstrap interval over examples and seeds, p from a paired sign-flip "
            "test; shaded blue: the interval excludes 0.</p>"
            f"<table><tr><th>Row</th>{head}</tr>{body}</table>")


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
text-align:center}img{max-width:100%;display:block;margin:1em 0 0.2em}
.facts td{text-align:left}small{color:#666}tr.base th,tr.base td{background:#f2f2f2;
font-style:italic}td.one{background:#fde2c8}td.sig{background:#dbe9f6}
figure{margin:0 0 1.5em}figcaption{color:#444;font-size:0.9em}
.lead{border-left:4px solid #4c72b0;padding:0.3em 0.8em;background:#f5f8fc}"""


def _baselines_md(base: dict, kinds: tuple, tasks) -> str:
    have = [t for t in tasks if t in base]
    lines = ["| baseline | " + " | ".join(HEADERS.get(t, t) for t in have) + " |",
             "|---|" + "---|" * len(have)]
    for key, label, d in kinds:
        lines.append(f"| {label} | " + " | ".join(f"{base[t][key]:.{d}f}" for t in have) + " |")
    return "\n".join(lines)


def write_report(out_dir: Path, title: str, rows: list[dict], figures: dict,
                 tables: dict[str, list[dict]], notes: list[str] = (),
                 loss_rows: list[dict] = (), *, lead: list[str] = (),
                 baselines: dict | None = None, marks: dict | None = None,
                 paired: list[tuple[str, list[dict], Metric]] = ()) -> tuple[Path, Path]:
    """Write report.html (self-contained) and report.md (+ PNGs next to it) into `out_dir`.
    `figures`: title -> PNG or (PNG, one-line caption); `tables`: title -> rows (flat dicts)
    shown after the figures, e.g. the run facts; `loss_rows`: the gold-option log-loss table,
    after the accuracy table; `lead`: lines shown first (what decides); `baselines`: per eval
    set, compare.baselines of its labels, shown under both tables; `marks`: row name -> eval
    set -> marker (`one_class`); `paired`: (reference, compare.paired_rows, metric) tables."""
    base = baselines or {}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             *(f"<p class='lead'>{html.escape(line)}</p>" for line in lead),
             "<h2>Results</h2><p>Accuracy % on each evaluation set, mean over seeds with a 95% "
             "bootstrap interval over seeds and examples"
             + (", above each set's majority-class and chance accuracy (Avg: their mean)"
                if base else "") + ".</p>",
             _table_html(rows, base=base, kinds=BASELINE_ROWS["accuracy"], marks=marks)]
    md = [f"# {title}\n", *(f"{line}\n" for line in lead), "## Results\n", to_markdown(rows)]
    if base:
        md.append(_baselines_md(base, BASELINE_ROWS["accuracy"], _columns(rows)) + "\n")
    if marks := {r: m for r, m in (marks or {}).items() if m}:
        parts.append(f"<p>{html.escape(ONE_CLASS_LEGEND)}</p>")
        md.append(ONE_CLASS_LEGEND + " " + "; ".join(
            f"{r}: " + ", ".join(f"{HEADERS.get(t, t)} {k}" for t, k in m.items())
            for r, m in marks.items()) + "\n")
    if loss_rows:
        parts += [f"<p>{html.escape(LOGLOSS_TITLE)}</p>",
                  _table_html(list(loss_rows), base=base, kinds=BASELINE_ROWS["logloss"])]
        md.append(f"\n{LOGLOSS_TITLE}\n\n{to_markdown(list(loss_rows), paper=False)}")
        if base:
            parts.append("<p>Label prior: the log-loss of the best constant guess, each set's own "
                         "label frequencies (a log-loss below it needs the examples); uniform: "
                         "ln of the number of options.</p>")
            md.append(_baselines_md(base, BASELINE_ROWS["logloss"], _columns(rows)) + "\n")
    if paired:
        parts.append("<h2>Paired comparisons</h2>")
        for reference, deltas, metric in paired:
            parts.append(_paired_html(reference, deltas, metric))
            md.append("\n" + paired_markdown(deltas, reference, _columns(deltas), metric=metric))
    for note in notes:
        parts.append(f"<p>{html.escape(note)}</p>")
        md.append(f"\n{note}\n")
    for name, fig in figures.items():
        png, caption = fig if isinstance(fig, tuple) else (fig, "")
        b64 = base64.b64encode(png).decode()
        parts.append(f"<h2>{html.escape(name)}</h2><figure><img alt='{html.escape(name)}' "
                     f"src='data:image/png;base64,{b64}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        file = "report_" + "".join(ch if ch.isalnum() else "_" for ch in name.lower()) + ".png"
        write_bytes(out_dir / file, png)
        md.append(f"\n## {name}\n\n![{name}]({file})\n" + (f"\n{caption}\n" if caption else ""))
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
