"""Rendering evaluation results: rich tables, markdown, confusion-matrix PNGs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from training.calibration import confidence_bins
from training.metrics import confusion

if TYPE_CHECKING:
    from training.evaluate import Scored


def print_table(title: str, metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("label", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for label, row in metrics["per_class"].items():
        table.add_row(label, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    console = Console()
    console.print(table)
    console.print(
        f"accuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   "
        f"ECE {metrics['ece']:.4f}   n {metrics['n']}"
    )


def markdown_per_class(metrics: dict[str, Any]) -> str:
    lines = ["| label | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for label, row in metrics["per_class"].items():
        lines.append(f"| {label} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
    return "\n".join(lines)


def _use_agg() -> None:
    """Draw to files only: no display is needed (or present) where reports are made."""
    import matplotlib

    matplotlib.use("Agg")


def save_confusion_png(path: Path, matrix: NDArray[np.integer], labels: list[str], title: str) -> Path:
    """Row-normalised confusion heatmap (the share of each true label), with the counts written in the cells."""
    _use_agg()
    import matplotlib.pyplot as plt

    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    size = max(5.0, 0.42 * len(labels) + 3)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fontsize = 8 if len(labels) <= 12 else 5
    for (i, j), value in np.ndenumerate(matrix):
        if value:
            ax.text(
                j,
                i,
                str(value),
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if shares[i, j] > 0.6 else "black",
            )
    fig.colorbar(image, ax=ax, fraction=0.04, label="share of the true label")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def reliability(probs: NDArray[np.floating], gold: NDArray[np.integer], bins: int = 15) -> list[dict[str, float]]:
    """Per equal-width confidence bin: texts, mean confidence, accuracy (the reliability diagram's data)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == gold
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = confidence_bins(confidence, bins)
    out: list[dict[str, float]] = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            out.append(
                {
                    "low": round(float(edges[b]), 3),
                    "high": round(float(edges[b + 1]), 3),
                    "n": int(mask.sum()),
                    "confidence": round(float(confidence[mask].mean()), 4),
                    "accuracy": round(float(correct[mask].mean()), 4),
                }
            )
    return out


def save_reliability_png(path: Path, rows: list[dict[str, float]], title: str) -> Path:
    _use_agg()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    centres = [(r["low"] + r["high"]) / 2 for r in rows]
    ax.bar(centres, [r["accuracy"] for r in rows], width=1 / 15 * 0.9, alpha=0.7, label="accuracy in the bin")
    ax.plot(
        [r["confidence"] for r in rows],
        [r["accuracy"] for r in rows],
        marker="o",
        color="C1",
        label="mean confidence → accuracy",
    )
    for r, x in zip(rows, centres, strict=True):
        ax.text(x, min(1.02, r["accuracy"] + 0.02), str(r["n"]), ha="center", fontsize=6)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("confidence (top intent)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


#: word-count bins of the accuracy-by-length table
LENGTH_BINS = ((1, 3), (4, 6), (7, 10), (11, 15), (16, 25), (26, None))


def accuracy_by_length(
    texts: Iterable[str], probs: NDArray[np.floating], gold: NDArray[np.integer]
) -> list[dict[str, str | float]]:
    words = np.array([len(str(t).split()) for t in texts])
    correct = probs.argmax(axis=1) == gold
    out: list[dict[str, str | float]] = []
    for low, high in LENGTH_BINS:
        mask = (words >= low) & ((words <= high) if high is not None else True)
        if mask.any():
            out.append(
                {
                    "words": f"{low}-{high}" if high is not None else f"{low}+",
                    "n": int(mask.sum()),
                    "accuracy": round(float(correct[mask].mean()), 4),
                }
            )
    return out


def worst_confusions(matrix: NDArray[np.integer], labels: list[str], k: int = 10) -> list[dict[str, str | float]]:
    pairs = [
        (int(matrix[i, j]), i, j) for i in range(len(labels)) for j in range(len(labels)) if i != j and matrix[i, j]
    ]
    pairs.sort(key=lambda p: (-p[0], labels[p[1]], labels[p[2]]))
    totals = matrix.sum(axis=1)
    return [
        {"true": labels[i], "predicted": labels[j], "count": n, "share_of_true": round(n / totals[i], 4)}
        for n, i, j in pairs[:k]
    ]


def _md_table(header: list[str], rows: Sequence[Sequence[object]], align: str) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def report_sections(scored: Scored, texts: Sequence[str]) -> dict[str, Any]:
    """The report's content as data: headline, per-label rows, confusions, reliability, accuracy by length."""
    matrix = confusion(scored.probs, scored.gold, len(scored.labels))
    return {
        "metrics": scored.metrics,
        "confusions": worst_confusions(matrix, scored.labels),
        "reliability": reliability(scored.probs, scored.gold),
        "by_length": accuracy_by_length(texts, scored.probs, scored.gold),
        "matrix": matrix,
    }


def write_report(directory: Path, title: str, scored: Scored, source: str, texts: Iterable[str] | None = None) -> Path:
    """``report.md`` and ``report.html`` (the same content) with ``confusion.png`` and ``reliability.png``.

    A team lead reads it: headline figures, a per-label table, the ten worst confusion pairs, a row-normalised
    confusion heatmap with counts, a reliability diagram and accuracy by text length.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    texts = list(texts) if texts is not None else [""] * len(scored.gold)
    parts = report_sections(scored, texts)
    save_confusion_png(
        directory / "confusion.png",
        parts["matrix"],
        scored.labels,
        f"{title}: share of each true label (counts in cells)",
    )
    save_reliability_png(directory / "reliability.png", parts["reliability"], f"{title}: reliability")
    m = scored.metrics
    f1 = {k: v["f1"] for k, v in m["per_class"].items() if v["support"]}
    weakest = min(f1, key=f1.__getitem__) if f1 else "-"
    lines = [
        f"# {title}",
        "",
        f"Data: `{source}`",
        "",
        *_md_table(
            ["accuracy", "macro-F1", "ECE (15 bins)", "weakest label (F1)", "texts"],
            [
                [
                    f"**{m['accuracy']:.4f}**",
                    f"**{m['macro_f1']:.4f}**",
                    f"{m['ece']:.4f}",
                    f"{weakest} ({f1.get(weakest, 0):.3f})",
                    m["n"],
                ]
            ],
            "rrrlr",
        ),
        "",
        "## Per label",
        "",
        *_md_table(
            ["label", "precision", "recall", "F1", "support"],
            [
                [label, f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", r["support"]]
                for label, r in m["per_class"].items()
            ],
            "lrrrr",
        ),
        "",
        "## The ten worst confusions",
        "",
    ]
    if parts["confusions"]:
        lines += _md_table(
            ["true", "predicted as", "texts", "share of the true label"],
            [[c["true"], c["predicted"], c["count"], f"{c['share_of_true']:.1%}"] for c in parts["confusions"]],
            "llrr",
        )
    else:
        lines.append("No text was confused.")
    lines += [
        "",
        "## Confusion matrix",
        "",
        "Rows are the true labels, normalised to 1; the cells hold the counts.",
        "",
        "![confusion matrix](confusion.png)",
        "",
        "## Calibration",
        "",
        "How often the top label is right at each confidence: on the diagonal, a confidence of 0.8 is right "
        "80% of the time.",
        "",
        "![reliability diagram](reliability.png)",
        "",
        *_md_table(
            ["confidence", "texts", "mean confidence", "accuracy"],
            [
                [f"{r['low']:.2f}-{r['high']:.2f}", r["n"], f"{r['confidence']:.3f}", f"{r['accuracy']:.3f}"]
                for r in parts["reliability"]
            ],
            "lrrr",
        ),
        "",
        "## Accuracy by text length",
        "",
        *_md_table(
            ["words", "texts", "accuracy"],
            [[r["words"], r["n"], f"{r['accuracy']:.4f}"] for r in parts["by_length"]],
            "lrr",
        ),
        "",
    ]
    text = "\n".join(lines)
    path = directory / "report.md"
    path.write_text(text)
    (directory / "report.html").write_text(markdown_to_html(text, title))
    return path


def markdown_to_html(text: str, title: str) -> str:
    """The report's markdown as a self-contained HTML page (headings, tables, images, bold; no external assets)."""
    import html
    import re

    def inline(s: str) -> str:
        s = html.escape(s)
        s = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", r'<img alt="\1" src="\2">', s)
        s = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", s)

    body, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            aligns = ["right" if c.endswith(":") else "left" for c in lines[i + 1].strip("|").split("|")]
            head = [c.strip() for c in line.strip("|").split("|")]
            body.append(
                "<table><tr>"
                + "".join(f'<th style="text-align:{a}">{inline(c)}</th>' for c, a in zip(head, aligns, strict=False))
                + "</tr>"
            )
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip("|").split("|")]
                body.append(
                    "<tr>"
                    + "".join(
                        f'<td style="text-align:{a}">{inline(c)}</td>' for c, a in zip(cells, aligns, strict=False)
                    )
                    + "</tr>"
                )
                i += 1
            body.append("</table>")
            continue
        heading = re.match(r"(#+) (.*)", line)
        if heading:
            level = len(heading.group(1))
            body.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
        i += 1
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:2px 8px;font-size:90%}"
        "th{background:#f0f0f0}img{max-width:100%}code{background:#f4f4f4}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
