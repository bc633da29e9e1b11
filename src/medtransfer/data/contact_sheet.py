"""A contact sheet: a PNG grid of sample slices exactly as the model gets them, so a user can see the input."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from medtransfer.atomic import atomic_path
from medtransfer.data.table import SampleTable


def _sheet_rows(table: SampleTable) -> list[tuple[str, list[int]]]:
    """(row title, row positions) per patient, and per modality too when modalities are separate samples."""
    frame = table.frame
    key = frame["group"].fillna("all").astype(str)
    reader = table.reader
    if getattr(reader, "fused", True) is False:  # separate modalities: one row per patient and modality
        key = key + " " + frame["ref"].map(lambda ref: str(ref).rsplit("|", 2)[1])
    rows = [(str(name), list(positions)) for name, positions in frame.groupby(key, sort=False).indices.items()]
    return _spread(rows, frame)


def _spread(rows: list[tuple[str, list[int]]], frame: pd.DataFrame) -> list[tuple[str, list[int]]]:
    """Patients taken in turn from each (label, split), so the first rows of a sheet show every class there is
    (a 3D MedMNIST file lists hundreds of train volumes of one class before any other); a patient's rows stay
    together. Titles gain the label and split."""
    by_patient: dict[str, list[tuple[str, list[int]]]] = {}
    buckets: dict[tuple[str, str], list[str]] = {}
    for title, positions in rows:
        first = positions[0]
        group, label, split = (str(frame[c].iat[first]) for c in ("group", "label", "split"))
        if group not in by_patient:
            buckets.setdefault((label, split), []).append(group)
        where = label if split in ("None", "nan") else f"{label}, {split}"
        by_patient.setdefault(group, []).append((f"{title} ({where})", positions))
    order: list[str] = []
    for turn in range(max(map(len, buckets.values()))):
        order += [bucket[turn] for bucket in buckets.values() if turn < len(bucket)]
    return [row for group in order for row in by_patient[group]]


def _panels(image: np.ndarray, names: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """Each channel as its own grey panel, then the composite, so every channel's contribution is visible."""
    if image.ndim == 2 or image.shape[2] == 1:
        return [("", image.reshape(image.shape[:2]))]
    names = list(names) if len(names) == image.shape[2] else [f"ch{c}" for c in range(image.shape[2])]
    return [(n, image[:, :, c]) for c, n in enumerate(names)] + [("RGB = " + ",".join(names), image)]


def contact_sheet(table: SampleTable, out_png: Path, per_patient: int = 4, max_patients: int = 4) -> Path:
    """A PNG grid of sample slices as the model gets them: rows are patients (and channels), columns are slices."""
    names = getattr(table.reader, "modalities", ())
    picked = []
    for title, rows in _sheet_rows(table)[:max_patients]:
        chosen = sorted({rows[int(i)] for i in np.linspace(0, len(rows) - 1, min(per_patient, len(rows))).round()})
        images = [(table.frame["sample_id"].iat[r], _panels(table.pixels(r), names)) for r in chosen]
        picked.append((title, images))
    n_rows = sum(len(images[0][1]) for _, images in picked)
    n_cols = max(len(images) for _, images in picked)
    fig = Figure(figsize=(2.2 * n_cols, 2.2 * n_rows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(n_rows, n_cols, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    row = 0
    for title, images in picked:
        for col, (sample_id, panels) in enumerate(images):
            for k, (channel, pixels) in enumerate(panels):
                ax = axes[row + k, col]
                ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
                ax.set_title(f"{sample_id}\n{channel}" if k == 0 else channel, fontsize=7)
        axes[row, 0].text(-0.08, 0.5, title, transform=axes[row, 0].transAxes, rotation=90, ha="right",
                          va="center", fontsize=8)
        row += len(images[0][1])
    fig.suptitle(f"{table.source}: {len(table)} samples", fontsize=9)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png) as partial:  # a crash never leaves a half-written sheet under the real name
        fig.savefig(partial, dpi=100, format="png")
    return out_png
