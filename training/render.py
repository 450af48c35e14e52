"""Rendering evaluation results: rich tables, markdown, confusion-matrix PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.metrics import confusion


def print_table(title: str, metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("label", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for label, row in metrics["per_class"].items():
        table.add_row(label, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    console = Console()
    console.print(table)
    console.print(f"accuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   "
                  f"ECE {metrics['ece']:.4f}   n {metrics['n']}")


def markdown_per_class(metrics: dict) -> str:
    lines = ["| label | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for label, row in metrics["per_class"].items():
        lines.append(f"| {label} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
    return "\n".join(lines)


def save_confusion_png(path: Path, matrix: np.ndarray, labels: list[str], title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.35 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(labels) <= 10:
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(directory: Path, title: str, scored, source: str) -> Path:
    """``report.md`` and ``confusion.png`` for one evaluation."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    matrix = confusion(scored.probs, scored.gold, len(scored.labels))
    save_confusion_png(directory / "confusion.png", matrix, scored.labels, title)
    m = scored.metrics
    text = (f"# {title}\n\nData: `{source}`\n\n"
            f"accuracy **{m['accuracy']:.4f}**, macro-F1 **{m['macro_f1']:.4f}**, ECE (15 bins) {m['ece']:.4f}, "
            f"n {m['n']}\n\n{markdown_per_class(m)}\n\n![confusion matrix](confusion.png)\n")
    path = directory / "report.md"
    path.write_text(text)
    return path
