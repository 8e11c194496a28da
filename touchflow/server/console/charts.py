"""Charts drawn on the server as SVG: no script, no library, readable without JavaScript and in a screenshot."""

from __future__ import annotations

from html import escape

PALETTE = ("#2463eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#b42318")


def stacked_bars(days: list[str], series: dict[str, list[int]], *, width: int = 720, height: int = 200,
                 label: str = "") -> str:
    """One bar per day, stacked by series (e.g. channels), with a legend; each bar part has a <title>."""
    top = max([sum(values) for values in zip(*series.values())] or [0]) or 1
    slot = width / max(len(days), 1)
    plot = height - 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(label)}" '
             f'viewBox="0 0 {width} {height + 20}" width="100%" data-chart="stacked">']
    for i, day in enumerate(days):
        y = plot
        for colour, (name, values) in zip(PALETTE * 3, series.items()):
            h = values[i] / top * (plot - 10)
            if values[i]:
                y -= h
                parts.append(f'<rect class="bar" data-series="{escape(name)}" data-day="{escape(day)}" '
                             f'data-value="{values[i]}" x="{i * slot + 1:.1f}" y="{y:.1f}" width="{max(slot - 2, 1):.1f}" '
                             f'height="{h:.1f}" fill="{colour}"><title>{escape(day)} {escape(name)}: {values[i]}'
                             '</title></rect>')
        if i % max(len(days) // 6, 1) == 0:
            parts.append(f'<text x="{i * slot:.1f}" y="{plot + 14}">{escape(day[5:])}</text>')
    parts.append(f'<text x="0" y="10">{top}</text>')
    for k, (colour, name) in enumerate(zip(PALETTE * 3, series)):
        parts.append(f'<rect x="{k * 110}" y="{height + 6}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{k * 110 + 14}" y="{height + 15}">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def horizontal_bars(counts: dict[str, int], *, width: int = 720, label: str = "") -> str:
    """One labelled bar per key, longest first."""
    rows = sorted(counts.items(), key=lambda kv: -kv[1])
    top = max(counts.values() or [0]) or 1
    height = 22 * len(rows) + 4
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(label)}" '
             f'viewBox="0 0 {width} {height}" width="100%" data-chart="bars">']
    for i, (name, value) in enumerate(rows):
        w = value / top * (width - 260)
        parts.append(f'<text x="0" y="{i * 22 + 15}">{escape(name)}</text>'
                     f'<rect class="bar" data-series="{escape(name)}" data-value="{value}" x="200" y="{i * 22 + 4}" '
                     f'width="{w:.1f}" height="14" fill="{PALETTE[0]}"><title>{escape(name)}: {value}</title></rect>'
                     f'<text x="{206 + w:.1f}" y="{i * 22 + 15}">{value}</text>')
    parts.append("</svg>")
    return "".join(parts)
