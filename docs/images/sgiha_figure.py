"""Draw docs/images/sgiha.png, the README's overview of SG-IHA (method §3-§6): python docs/images/sgiha_figure.py."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

OUT = Path(__file__).with_name("sgiha.png")
BACKBONE, HEAD, LOSS, DATA = "#dbe8f6", "#fde9c9", "#e3f2d9", "#f2f2f2"


def box(ax, x: float, y: float, w: float, h: float, text: str, color: str, size: int = 9) -> None:
    """A rounded box with centred text; (x, y) is its lower-left corner."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=color, ec="#555555"))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size)


def arrow(ax, start: tuple[float, float], end: tuple[float, float], elbow: bool = False) -> None:
    """An arrow from start to end; ``elbow``: leave horizontally, arrive vertically."""
    style = "angle,angleA=0,angleB=90,rad=0" if elbow else "arc3"
    ax.annotate("", xy=end, xytext=start,
                arrowprops={"arrowstyle": "-|>", "color": "#333333", "lw": 1.1, "connectionstyle": style})


def main() -> None:
    fig, ax = plt.subplots(figsize=(10, 5.2), dpi=100)
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 5.2)
    ax.axis("off")
    # Inputs.
    box(ax, 0.1, 4.2, 1.6, 0.6, "pedestrian image\n384 x 128", DATA)
    box(ax, 0.1, 2.3, 1.6, 0.8, "caption\n\"... a green coat\nand white jeans\"", DATA, 8)
    box(ax, 0.1, 0.9, 1.6, 0.8, "question\n\"... a [mask] [mask]\nand white jeans\"", DATA, 8)
    box(ax, 0.1, 0.05, 1.6, 0.55, "answer \"green coat\"", DATA, 8)
    # CLIP towers.
    box(ax, 2.1, 4.2, 2.2, 0.6, "CLIP image tower (ViT-B/16)\n12 blocks", BACKBONE, 8)
    box(ax, 2.1, 2.3, 2.2, 0.8, "CLIP text tower\n12 blocks", BACKBONE, 8)
    box(ax, 2.1, 0.9, 2.2, 0.8, "CLIP text tower\n(same weights)", BACKBONE, 8)
    box(ax, 2.1, 0.05, 2.2, 0.55, "CLIP text tower", BACKBONE, 8)
    for y in (4.5, 2.7, 1.3, 0.32):
        arrow(ax, (1.7, y), (2.1, y))
    # Global features and the retrieval losses.
    box(ax, 4.7, 4.02, 1.0, 0.5, "image\nfeature v_g", BACKBONE, 8)
    box(ax, 4.7, 2.45, 1.0, 0.5, "text\nfeature t_g", BACKBONE, 8)
    arrow(ax, (4.3, 4.27), (4.7, 4.27))
    arrow(ax, (4.3, 2.7), (4.7, 2.7))
    box(ax, 4.55, 3.3, 1.3, 0.55, "SDM + ID\n(+ MLM)", LOSS, 8)
    arrow(ax, (5.2, 4.02), (5.2, 3.95))
    arrow(ax, (5.2, 2.95), (5.2, 3.3))
    ax.text(7.15, 3.45, "retrieval at test time:\ncos(t_g, v_g) only", fontsize=8, va="center", style="italic")
    # SG-IHA head (training only).
    ax.add_patch(FancyBboxPatch((6.1, 0.15), 3.75, 2.85, boxstyle="round,pad=0.02", fc="none", ec="#b36b00",
                                ls="--", lw=1.2))
    ax.text(8.0, 2.8, "SG-IHA (training only)", ha="center", fontsize=8, color="#b36b00", weight="bold")
    box(ax, 6.25, 1.95, 3.45, 0.65, "per tapped layer l = 6 ... 11:\nfilter V_l by sigmoid(Linear(v_g)),"
        "\nquestion T_l attends to filtered patches", HEAD, 8)
    box(ax, 6.25, 1.05, 3.45, 0.65, "+ previous layer, self-attention,\nMLP; output z (start token)", HEAD, 8)
    box(ax, 6.25, 0.25, 3.45, 0.55, "AQA: InfoNCE between z and answer feature", LOSS, 8)
    arrow(ax, (7.97, 1.95), (7.97, 1.7))
    arrow(ax, (7.97, 1.05), (7.97, 0.8))
    # Hidden states and guidance into the head.
    arrow(ax, (4.3, 4.7), (7.0, 2.6), elbow=True)
    ax.text(4.9, 4.78, "image hidden states 6-11", fontsize=7.5, color="#333333")
    arrow(ax, (5.7, 4.27), (9.0, 2.6), elbow=True)
    ax.text(7.6, 4.33, "v_g guides the filter", fontsize=7.5, color="#333333")
    arrow(ax, (4.3, 1.3), (6.25, 2.1))
    ax.text(4.45, 1.85, "question hidden\nstates 6-11", fontsize=7.5, color="#333333")
    arrow(ax, (4.3, 0.32), (6.25, 0.5))
    fig.savefig(OUT, bbox_inches="tight", dpi=100)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
