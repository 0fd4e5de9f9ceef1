"""Report page: results/<sweep>/index.html and README.md, which tie the report together.

Plain HTML with inline CSS and relative paths: it opens offline, with nothing fetched from
outside. The README shows the same content on a code host.
"""

import datetime
import html
import importlib.metadata
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from metrics import report_stats, report_tables

# Where the runs may record their environment (run.json / eval.json "env"), by the label shown.
ENV_KEYS = {
    "git commit": ("git_commit", "commit", "git"),
    "torch": ("torch", "torch_version"),
    "device": ("device", "device_name", "gpu"),
}
CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:.25em .6em}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}
img{max-width:100%}figure{display:inline-block;margin:.5em;vertical-align:top}
figcaption{font-size:.85em;color:#555}pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:.85em}
.note{color:#8a5300}.best{font-weight:bold}
"""


@dataclass(frozen=True)
class Page:
    """Everything one sweep's page shows; paths are files inside the sweep's report folder."""

    sweep: str
    states: dict  # state -> number of runs
    table: report_tables.Table
    files: dict  # label -> path (tables, data)
    plots: list  # (title, png, pdf)
    videos: list  # dicts: variant, task, seed, run_id, path, videos, frames
    protocol: dict  # task -> [(key, text)]
    failed: list  # dicts: variant, seed, run_id, attempts, error, log
    unfinished: list  # dicts: variant, seed, run_id, state, step
    notes: list  # warnings about a partly done sweep
    env: dict  # label -> text
    paired: report_tables.Table | None = None  # variant - reference, matched by seed
    verdicts: tuple = ()  # one sentence per (task, variant) against the baselines and FVD references
    verdict_caption: str = ""  # the verdicts' test, correction and number of comparisons
    dynamics: tuple = ()  # report_dynamics: one Table per task with a dynamics readout (procedural data)
    dynamics_verdicts: tuple = ()  # its variants against the baselines, one sentence per (task, variant)
    dynamics_caption: str = ""  # their test, correction and number of comparisons


def git_commit(repo: Path) -> str:
    """HEAD of the checkout that holds the report code, marked when it has uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git checkout)"
    return head + (" (uncommitted changes)" if dirty else "")


def environment(recorded: list, repo: Path) -> dict:
    """Git commit, torch version and device as the runs recorded them, else from this checkout; and the date."""
    env = {}
    for label, keys in ENV_KEYS.items():
        values = sorted({str(next(e[k] for k in keys if e.get(k) is not None))
                         for e in recorded if any(e.get(k) is not None for k in keys)})
        if values:
            env[label] = ", ".join(values) + " (recorded by the runs)"
    if "git commit" not in env:
        env["git commit"] = git_commit(repo) + " (report checkout; the runs recorded none)"
    if "torch" not in env:
        try:
            env["torch"] = importlib.metadata.version("torch") + " (installed here; the runs recorded none)"
        except importlib.metadata.PackageNotFoundError:
            env["torch"] = "not installed here; the runs recorded none"
    env.setdefault("device", "not recorded by the runs")
    known = {k for keys in ENV_KEYS.values() for k in keys}
    for key in sorted({k for e in recorded for k in e} - known):
        env[key] = ", ".join(sorted({str(e[key]) for e in recorded if key in e}))
    env["python (report)"] = platform.python_version()
    env["report date"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return env


def rel(path: Path, root: Path) -> str:
    return quote(Path(path).relative_to(root).as_posix())


def esc(value) -> str:
    return html.escape(str(value))


def html_table(table: report_tables.Table) -> str:
    head = "".join(f"<th>{esc(label + report_tables.arrow(d, '↑', '↓'))}</th>" for label, d in table.header)
    body = []
    for row in table.rows:
        cells = "".join(f'<td class="{"num" if j >= 2 else ""}{" best" if best else ""}">{esc(text)}</td>'
                        for j, (text, best) in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    if not table.rows:
        body.append(f'<tr><td colspan="{len(table.header)}">no evaluated runs yet</td></tr>')
    return f"<p>{esc(table.caption)}</p><table><tr>{head}</tr>{''.join(body)}</table>"


def kv_table(items) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items)
    return f"<table>{rows}</table>"


def render_html(page: Page, root: Path) -> str:
    """The page as one self-contained HTML string; every reference is a relative path under root."""
    states = ", ".join(f"{n} {s}" for s, n in page.states.items())
    parts = [f"<h1>Sweep <code>{esc(page.sweep)}</code></h1>", f"<p>Runs: {esc(states)}.</p>"]
    parts += [f'<p class="note">⚠ {esc(n)}</p>' for n in page.notes]
    parts += ["<h2>Results</h2>", html_table(page.table), "<p>Files: " + " · ".join(
        f'<a href="{rel(p, root)}">{esc(label)}</a>' for label, p in page.files.items()) + "</p>"]
    if page.verdicts:
        parts.append(f"<h3>Against the baselines</h3><p>{esc(page.verdict_caption)}</p><ul>"
                     + "".join(f"<li>{esc(v)}</li>" for v in page.verdicts) + "</ul>")
    parts.append("<h3>Paired comparisons</h3>")
    parts.append(html_table(page.paired) if page.paired else "<p>No two variants share a seed: nothing is paired.</p>")
    parts.append(f"<p><b>Rule.</b> {esc(report_stats.SIGNIFICANCE_RULE)} {esc(report_stats.SMALL_N_NOTE)}</p>")
    if page.dynamics:
        parts += ["<h3>Dynamics readout</h3>"] + [html_table(t) for t in page.dynamics]
    if page.dynamics_verdicts:
        parts.append(f"<p>Against the baselines: {esc(page.dynamics_caption)}</p><ul>"
                     + "".join(f"<li>{esc(v)}</li>" for v in page.dynamics_verdicts) + "</ul>")
    if page.plots:
        parts.append("<h2>Plots</h2>")
        parts += [f'<figure><a href="{rel(pdf, root)}"><img src="{rel(png, root)}" alt="{esc(title)}"></a>'
                  f"<figcaption>{esc(title)} (click for PDF)</figcaption></figure>" for title, png, pdf in page.plots]
    if page.videos:
        parts.append("<h2>Samples</h2><p>Columns: condition (generated region grey), ground truth, generated. "
                     "Border: green = given frame, orange = partly given, grey = generated.</p>")
        parts += [f'<figure><img src="{rel(v["path"], root)}" alt="{esc(v["variant"])} {esc(v["task"])}">'
                  f'<figcaption>{esc(v["variant"])} · {esc(v["task"])} · seed {esc(v["seed"])} '
                  f'(run {esc(v["run_id"])}, {v["videos"]} videos, {v["frames"]} frames)</figcaption></figure>'
                  for v in page.videos]
    parts.append("<h2>Protocol</h2>")
    parts += [f"<h3>{esc(task)}</h3>" + kv_table(items) for task, items in page.protocol.items()]
    if not page.protocol:
        parts.append("<p>No run has been evaluated yet.</p>")
    if page.failed:
        parts.append("<h2>Failed runs</h2>")
        parts += [f"<h3>{esc(f['variant'])}, seed {esc(f['seed'])} (run {esc(f['run_id'])}, "
                  f"attempts {esc(f['attempts'])})</h3><p>log: {esc(f['log'])}</p><pre>{esc(f['error'])}</pre>"
                  for f in page.failed]
    if page.unfinished:
        parts.append("<h2>Unfinished runs</h2>" + kv_table(
            (f"{u['variant']}, seed {u['seed']} ({u['run_id']})", f"{u['state']} at step {u['step']}")
            for u in page.unfinished))
    parts += ["<h2>Environment</h2>", kv_table(page.env.items())]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(page.sweep)}: vdt-bench report</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def render_readme(page: Page, root: Path) -> str:
    """The same content as Markdown, for the code host."""
    states = ", ".join(f"{n} {s}" for s, n in page.states.items())
    lines = [f"# Sweep `{page.sweep}`", "", f"Runs: {states}. Open `index.html` for the full page.", ""]
    lines += [f"- ⚠ {n}" for n in page.notes] + ([""] if page.notes else [])
    lines += ["## Results", "", report_tables.to_markdown(page.table)]
    lines += [" · ".join(f"[{label}]({rel(p, root)})" for label, p in page.files.items()), ""]
    if page.verdicts:
        lines += ["### Against the baselines", "", page.verdict_caption, ""] + [f"- {v}" for v in page.verdicts]
        lines += [""]
    lines += ["### Paired comparisons", ""]
    lines += [report_tables.to_markdown(page.paired) if page.paired else "No two variants share a seed: nothing is "
              "paired.\n"]
    lines += [f"**Rule.** {report_stats.SIGNIFICANCE_RULE} {report_stats.SMALL_N_NOTE}", ""]
    if page.dynamics:
        lines += ["### Dynamics readout", ""] + [report_tables.to_markdown(t) for t in page.dynamics]
    if page.dynamics_verdicts:
        lines += [f"Against the baselines: {page.dynamics_caption}", ""] + [f"- {v}" for v in page.dynamics_verdicts]
        lines += [""]
    if page.plots:
        lines += ["## Plots", ""] + [f"![{t}]({rel(png, root)}) ([PDF]({rel(pdf, root)}))\n" for t, png, pdf in
                                     page.plots]
    if page.videos:
        lines += ["## Samples", "", "Columns: condition, ground truth, generated. Border: green = given, "
                  "orange = partly given, grey = generated.", ""]
        lines += [f"**{v['variant']} · {v['task']}** (seed {v['seed']})\n\n![{v['variant']} {v['task']}]"
                  f"({rel(v['path'], root)})\n" for v in page.videos]
    lines += ["## Protocol", ""]
    for task, items in page.protocol.items():
        lines += [f"**{task}**", ""] + [f"- {k}: {v}" for k, v in items] + [""]
    if page.failed:
        lines += ["## Failed runs", ""]
        for f in page.failed:
            lines += [f"**{f['variant']}, seed {f['seed']}** (run {f['run_id']}, log {f['log']})", "", "```",
                      str(f["error"]), "```", ""]
    if page.unfinished:
        lines += ["## Unfinished runs", ""] + [f"- {u['variant']}, seed {u['seed']} ({u['run_id']}): {u['state']} "
                                               f"at step {u['step']}" for u in page.unfinished] + [""]
    lines += ["## Environment", ""] + [f"- {k}: {v}" for k, v in page.env.items()]
    return "\n".join(lines) + "\n"


def write_page(page: Page, root: Path) -> tuple:
    """Write index.html and README.md into root; return their paths."""
    index, readme = root / "index.html", root / "README.md"
    index.write_text(render_html(page, root))
    readme.write_text(render_readme(page, root))
    return index, readme
