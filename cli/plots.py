"""Charts of the command line, drawn with matplotlib (the optional ``plots`` extra)."""

from __future__ import annotations


def grouped_bar_chart(values: dict, means: dict, path: str, title: str = "", ylabel: str = "") -> None:
    """Bars of ``{series: {name: value or None}}`` grouped by name, one colour per series, with a
    dashed line at each series' mean from ``means`` (paper Fig. 4 compares source-only and FADA class
    by class). Raises ImportError without matplotlib."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend or global figure state

    series = list(values)
    names = list(values[series[0]])
    width = 0.8 / len(series)
    fig = Figure(figsize=(max(8.0, 2 + 0.12 * len(names) * (len(series) + 1)), 4.5), layout="constrained")
    ax = fig.add_subplot()
    for i, s in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * width
        heights = [float("nan") if values[s][n] is None else values[s][n] for n in names]
        mean = means[s]
        label = s if mean is None else f"{s} (mean {mean:.3f})"
        ax.bar([j + offset for j in range(len(names))], heights, width, color=f"C{i}", label=label)
        if mean is not None:
            ax.axhline(mean, color=f"C{i}", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(names)), names, rotation=90)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never over them
    fig.savefig(path, dpi=100)
