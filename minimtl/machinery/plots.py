"""Training curves and a reliability diagram as small SVG files, written by hand.

    write_curves(out / "curves.svg", history, best_epoch)
    write_reliability(out / "reliability.svg", pooled, temperatures, "test")  # calibration.calibration_report

Why not matplotlib: it is a heavy optional dependency for two line charts, and its PNGs differ from machine to
machine. An SVG built from strings needs only the standard library, is deterministic (same history, same
bytes), opens in any browser, diffs as text, and shows how little a line chart needs: map values to pixels,
draw polylines, label the axes.
"""

import html
import math
import re
from pathlib import Path

from ..extensions.calibration import expected_calibration_error, reliability
from .progress_line import RUNNING

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",  # the familiar "tab10" colours
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
METRICS = ("label_accuracy", "entity_f1", "frame_accuracy")  # the scores model selection can use
PANEL_W, PLOT_H = 480, 240  # each panel's size; the plot area is what is left inside the margins below
LEFT, RIGHT, TOP = 62, 22, 56  # room for the y tick labels and axis title, a gap, title and marker label
INSET = 8  # the y range starts this far inside the frame: a curve at 100% or at 0 must not hide in the axis
LEGEND_ROW = 18


STEP_COLOUR = "#555555"  # the per-step loss: one grey line under the per-task dots, whatever the tasks


def write_curves(path, history, best_epoch):
    """Write `history` (one record per epoch, as training keeps it) as a two-panel SVG at `path`. A record's
    "step_losses" ([[the fraction of its epoch done, the running mean of the loss]], ProgressLine.curve) make
    one line across the epochs, beside the per-task losses of each epoch's end."""
    rows = [(r.get("epoch", i), r) for i, r in enumerate(history, 1)]
    epochs = sorted({epoch for epoch, _ in rows})
    steps = [(epoch - 1 + done, loss) for epoch, r in rows for done, loss in _pairs(r.get("step_losses"))]
    # Both panels share the epoch axis; half an epoch of air on each side, so that the first and last points
    # (and a lone one) sit off the axes, or from the start of training when the steps are drawn.
    x_range = (epochs[0] - 0.5, epochs[-1] + 0.5) if epochs else (0.5, 1.5)
    if steps:
        x_range = (min(x_range[0], math.floor(min(x for x, _ in steps))), x_range[1])
    # Training keeps the per-task losses in record["losses"]; records that flatten them as loss_<task> work too.
    losses = _series(rows, lambda r: r.get("losses") or {k[5:]: v for k, v in r.items() if k.startswith("loss_")})
    dev = _series(rows, lambda r: {k: 100 * v for k, v in (r.get("dev") or {}).items()
                                   if k.rsplit("/", 1)[-1] in METRICS and _number(v) and 0 <= v <= 1})
    selected = best_epoch if best_epoch in epochs else None  # a selection outside the history has no place here
    line = {f"all tasks, per step (mean of the last {RUNNING})": steps} if steps else {}
    left, h1 = _panel("training loss", "loss", losses, epochs, x_range, selected, percent=False, line=line)
    right, h2 = _panel("dev metrics", "dev score (%)", dev, epochs, x_range, selected, percent=True)
    width, height = 2 * PANEL_W, max(h1, h2)
    svg = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} '
            f'{height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">'),
           f'<rect width="{width}" height="{height}" fill="white"/>',
           '<g class="panel" id="loss">', *left, "</g>",
           f'<g class="panel" id="dev" transform="translate({PANEL_W},0)">', *right, "</g>", "</svg>"]
    Path(path).write_text("\n".join(svg) + "\n", encoding="utf-8")


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pairs(points):
    """The [x, y] pairs of numbers in `points` (anything else, as from a hand-edited file, is skipped)."""
    return [(x, y) for x, y in (p for p in points or [] if isinstance(p, list) and len(p) == 2)
            if _number(x) and _number(y)]


def _series(rows, pick):
    """{name: [(epoch, value), ...]}: an epoch that lacks a name (or has no number for it) is skipped. Names
    are sorted so that a task keeps its colour from one run to the next."""
    out = {}
    for epoch, record in rows:
        for name, value in pick(record).items():
            if _number(value):
                out.setdefault(str(name), []).append((epoch, float(value)))
    return dict(sorted(out.items()))


def _panel(title, y_title, series, epochs, x_range, selected, percent, line=None):
    """The SVG elements of one panel over `x_range` (in epochs), and the height it needs (its legend grows with
    the number of series). `line`: {name: points} drawn as one thin line without markers (hundreds of points)."""
    plot_w = PANEL_W - LEFT - RIGHT
    line = line or {}
    values = [v for points in (*series.values(), *line.values()) for _, v in points]
    if percent:  # at least 2 points of range, so that noise in the 4th digit is not blown up to the full height
        lo, hi = min(values, default=0.0), max(values, default=100.0)
        if hi - lo < 2:
            lo, hi = max(0.0, lo - 1), min(100.0, hi + 1)
    else:  # losses from 0: how far they fell is what matters, and a constant loss still gets an axis
        lo, hi = min([0.0, *values]), max(values, default=1.0)
        if hi <= lo:
            hi = lo + 1
    y_step = _step(hi - lo, 5)
    lo, hi = math.floor(lo / y_step + 1e-9) * y_step, math.ceil(hi / y_step - 1e-9) * y_step  # end on ticks
    x_lo, x_hi = x_range
    x_step = max(1, round(_step(x_hi - x_lo, 6)))  # whole epochs only

    def x(epoch):
        return LEFT + (epoch - x_lo) / (x_hi - x_lo) * plot_w

    def y(value):
        return TOP + INSET + (hi - value) / (hi - lo) * (PLOT_H - 2 * INSET)

    bottom, right = TOP + PLOT_H, LEFT + plot_w
    heading = f'<text x="{PANEL_W / 2:.1f}" y="24" text-anchor="middle" font-size="15" font-weight="bold">'
    out = [f"{heading}{_esc(title)}</text>"]
    for value in _ticks(lo, hi, y_step):
        out.append(f'<line x1="{LEFT}" y1="{y(value):.1f}" x2="{right}" y2="{y(value):.1f}" stroke="#e6e6e6"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{_format(value, y_step)}</text>')
    for epoch in _ticks(x_lo, x_hi, x_step):
        out.append(f'<line x1="{x(epoch):.1f}" y1="{bottom}" x2="{x(epoch):.1f}" y2="{bottom + 5}" stroke="#333"/>')
        out.append(f'<text x="{x(epoch):.1f}" y="{bottom + 18}" text-anchor="middle">{epoch}</text>')
    out.append(f'<path d="M{LEFT} {TOP}V{bottom}H{right}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{bottom + 36}" text-anchor="middle">epoch</text>')
    out.append(f'<text transform="translate(16,{TOP + PLOT_H / 2:.1f}) rotate(-90)" text-anchor="middle">'
               f"{_esc(y_title)}</text>")
    if not series and not line:
        out.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + PLOT_H / 2:.1f}" text-anchor="middle" '
                   f'fill="#888">no data</text>')
    radius = 3 if len(epochs) <= 30 else 2  # 60 epochs of big markers would hide the line
    unit = "%" if percent else ""
    for name, points in line.items():  # under the per-epoch series, which it would otherwise cover
        xy = " ".join(f"{x(e):.1f},{y(v):.1f}" for e, v in points)
        out.append(f'<polyline class="steps" points="{xy}" fill="none" stroke="{STEP_COLOUR}" stroke-width="1.2" '
                   f'stroke-linejoin="round"><title>{_esc(name)}</title></polyline>')
    for i, (name, points) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        xy = " ".join(f"{x(e):.1f},{y(v):.1f}" for e, v in points)
        out.append(f'<polyline points="{xy}" fill="none" stroke="{colour}" stroke-width="2" '
                   f'stroke-linejoin="round"><title>{_esc(name)}</title></polyline>')
        for e, v in points:  # the <title> is the tooltip a browser shows on hover
            out.append(f'<circle cx="{x(e):.1f}" cy="{y(v):.1f}" r="{radius}" fill="{colour}" stroke="white">'
                       f"<title>{_esc(name)}, epoch {e}: {v:.4g}{unit}</title></circle>")
    if selected is not None:
        sx = x(selected)
        out.append(f'<line class="selected" x1="{sx:.1f}" y1="{TOP - 4}" x2="{sx:.1f}" y2="{bottom}" stroke="#444" '
                   f'stroke-width="1.5" stroke-dasharray="5,4"/>')
        # Above the plot area, where no curve can run through it; clamped so that it stays inside the panel.
        label_x = min(max(sx, LEFT + 60), PANEL_W - 64)
        out.append(f'<text class="selected" x="{label_x:.1f}" y="{TOP - 8}" text-anchor="middle" fill="#333">'
                   f"selected: epoch {selected}</text>")
    legend_top = bottom + 52
    for i, name in enumerate([*series, *line]):
        colour, row = PALETTE[i % len(PALETTE)] if name in series else STEP_COLOUR, legend_top + i * LEGEND_ROW
        shown = name if len(name) <= 56 else name[:55] + "\u2026"  # stay inside the panel
        out.append(f'<line x1="{LEFT}" y1="{row}" x2="{LEFT + 22}" y2="{row}" stroke="{colour}" stroke-width="2"/>')
        if name in series:  # a marker, as on its points
            out.append(f'<circle cx="{LEFT + 11}" cy="{row}" r="3" fill="{colour}" stroke="white"/>')
        out.append(f'<text x="{LEFT + 30}" y="{row + 4}">{_esc(shown)}</text>')
    return out, legend_top + (len(series) + len(line)) * LEGEND_ROW


def _step(span, count):
    """A round tick step (1, 2 or 5 times a power of ten) that cuts `span` into about `count` intervals."""
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * (1 - 1e-9))


def _ticks(lo, hi, step):
    # Multiples of an integer count of steps: no drift from adding 0.1 to itself ten times.
    return [k * step for k in range(math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) + 1)]


def _format(value, step):
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))  # as many as the step needs: 0.05 -> 2
    return f"{value + 0.0:.{decimals}f}"  # + 0.0 turns -0.0 into 0.0


def _esc(text):
    # Names come from data files: escape the markup, and drop the control characters XML 1.0 forbids outright.
    return html.escape(re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", "", text))


RELIABILITY_KINDS = (("label", "sentence labels"), ("entity", "entities"))
MIN_POINT = 10  # predictions a point of the diagram stands for, at the least: 1 or 2 make a zigzag of accidents


def merged(bins, least=MIN_POINT):
    """The nonempty (count, mean confidence, accuracy) bins of `reliability`, neighbours merged (weighted by
    count) until each holds at least `least` predictions; a short remainder joins the last point."""
    out, run = [], (0, 0.0, 0.0)
    for n, c, a in bins:
        if n:
            run = (run[0] + n, run[1] + n * c, run[2] + n * a)
        if run[0] >= least:
            out.append(run)
            run = (0, 0.0, 0.0)
    if run[0]:
        if out:
            last = out.pop()
            run = (last[0] + run[0], last[1] + run[1], last[2] + run[2])
        out.append(run)
    return [(n, c / n, a / n) for n, c, a in out]


def write_reliability(path, pooled, temperatures, split="test"):
    """A reliability diagram (accuracy against mean confidence, before and after calibration) with one panel
    per task that `pooled` has, as calibration.calibration_report returns it for `split`. The ECE in the legend
    is over ECE_BINS equal bins; the points merge neighbouring bins until each stands for MIN_POINT
    predictions, and say how many."""
    panels = []
    for kind, title in RELIABILITY_KINDS:
        if kind not in pooled:
            continue
        t = temperatures.get("cls" if kind == "label" else "ner", 1.0)
        series = {}
        for when, name in (("before", "before (T = 1)"), ("after", f"after (T = {t:.3g})")):
            confidences, correct = pooled[kind][when]
            ece = expected_calibration_error(confidences, correct)
            series[f"{name}: ECE {100 * ece:.2f}%"] = merged(reliability(confidences, correct))
        n = len(pooled[kind]["before"][0])
        on = split if split == "test" else f"{split}, which T was fitted on"
        panels.append(_reliability_panel(f"{title} ({n:,}) on {on}", series))
    width = PANEL_W * max(1, len(panels))
    height = TOP + PLOT_H + 52 + 3 * LEGEND_ROW
    svg = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} '
            f'{height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">'),
           f'<rect width="{width}" height="{height}" fill="white"/>']
    for i, panel in enumerate(panels):
        svg += [f'<g class="panel" transform="translate({i * PANEL_W},0)">', *panel, "</g>"]
    if not panels:
        svg.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#888">no predictions</text>')
    Path(path).write_text("\n".join(svg + ["</svg>"]) + "\n", encoding="utf-8")


def _reliability_panel(title, series):
    """Accuracy (y) against confidence (x), both 0 to 1, the diagonal being perfect calibration."""
    plot_w, bottom = PANEL_W - LEFT - RIGHT, TOP + PLOT_H
    side = min(plot_w, PLOT_H)  # square, so that the diagonal is at 45 degrees

    def x(value):
        return LEFT + value * side

    def y(value):
        return bottom - value * side

    heading = f'<text x="{PANEL_W / 2:.1f}" y="24" text-anchor="middle" font-size="15" font-weight="bold">'
    out = [f"{heading}{_esc(title)}</text>"]
    for value in _ticks(0, 1, 0.2):
        out.append(f'<line x1="{LEFT}" y1="{y(value):.1f}" x2="{x(1):.1f}" y2="{y(value):.1f}" stroke="#e6e6e6"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.1f}</text>')
        out.append(f'<text x="{x(value):.1f}" y="{bottom + 18}" text-anchor="middle">{value:.1f}</text>')
    out.append(f'<path d="M{LEFT} {y(1):.1f}V{bottom}H{x(1):.1f}" fill="none" stroke="#333"/>')
    out.append(f'<line class="diagonal" x1="{x(0):.1f}" y1="{y(0):.1f}" x2="{x(1):.1f}" y2="{y(1):.1f}" '
               f'stroke="#888" stroke-dasharray="5,4"/>')
    out.append(f'<text x="{LEFT + side / 2:.1f}" y="{bottom + 36}" text-anchor="middle">confidence (bin mean)</text>')
    out.append(f'<text transform="translate(16,{bottom - side / 2:.1f}) rotate(-90)" text-anchor="middle">'
               f"accuracy</text>")
    for i, (name, points) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        xy = " ".join(f"{x(c):.1f},{y(a):.1f}" for _, c, a in points)
        out.append(f'<polyline points="{xy}" fill="none" stroke="{colour}" stroke-width="2">'
                   f"<title>{_esc(name)}</title></polyline>")
        for n, c, a in points:
            out.append(f'<circle cx="{x(c):.1f}" cy="{y(a):.1f}" r="3" fill="{colour}" stroke="white">'
                       f"<title>{n:,} predictions: confidence {c:.3f}, accuracy {a:.3f}</title></circle>")
            out.append(f'<text class="count" x="{x(c) + 5:.1f}" y="{y(a) - 5 + 12 * i:.1f}" font-size="9" '
                       f'fill="{colour}">{n:,}</text>')
    legend_top = bottom + 52
    for i, name in enumerate(series):
        colour, row = PALETTE[i % len(PALETTE)], legend_top + i * LEGEND_ROW
        out.append(f'<line x1="{LEFT}" y1="{row}" x2="{LEFT + 22}" y2="{row}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{LEFT + 30}" y="{row + 4}">{_esc(name)}</text>')
    return out
