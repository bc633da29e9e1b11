"""`medtransfer inspect`: what a data source holds, and the problems that would hurt a study."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from medtransfer.config import TrainConfig
from medtransfer.data.duplicate_record import duplicate_problem, summary_line
from medtransfer.data.table import SampleTable


def inspect(cfg: TrainConfig, sample: int = 200, contact_sheet: Path | None = None) -> str:
    """`medtransfer inspect`'s text: what the configured source holds and its problems; for volumes (NIfTI/DICOM
    sets and 3D MedMNIST files) also a contact sheet of sample slices, at `contact_sheet` (by default
    <data>_contact_sheet.png in the working folder)."""
    from medtransfer.data.contact_sheet import contact_sheet as write_sheet
    from medtransfer.data.duplicate_record import inspect_duplicates
    from medtransfer.data.load import load_table, volume_options, volume_root
    from medtransfer.data.npz_volumes import describe_npz_volumes, is_npz_volumes

    sheet = contact_sheet or Path(f"{Path(cfg.data).name}_contact_sheet.png")
    if cfg.modalities:
        from medtransfer.data.volume_describe import describe_volumes

        report = describe_volumes(volume_root(cfg), volume_options(cfg))
        write_sheet(load_table(cfg), sheet)
        return render_volumes(report, sheet)
    table = load_table(cfg)
    text = render(inspect_table(table, sample, inspect_duplicates(table, cfg.cache_dir)))
    if is_npz_volumes(table):  # 3D MedMNIST: volumes per split, slices per volume, and a contact sheet
        text += "\n\n" + render_npz_volumes(describe_npz_volumes(table), write_sheet(table, sheet))
    return text


def inspect_table(table: SampleTable, sample: int = 200, duplicates: dict | None = None) -> dict:
    """Counts per split/class/group, sizes and channels of a sample of images, and problems found (with the
    `duplicates` record of data/duplicate_record.py, when given)."""
    frame = table.frame
    split = frame["split"].fillna("(none: will be split)")
    counts = frame.assign(split=split).groupby(["split", "label"]).size().unstack(fill_value=0)
    counts["total"] = counts.sum(axis=1)
    rng = np.random.default_rng(0)
    picked = rng.choice(len(frame), size=min(sample, len(frame)), replace=False)
    sizes, channels = Counter(), Counter()
    for i in picked:
        pixels = table.pixels(int(i))
        sizes[f"{pixels.shape[1]}x{pixels.shape[0]}"] += 1
        channels[1 if pixels.ndim == 2 else pixels.shape[2]] += 1
    problems = []  # the table's notes (where class names came from, an ordinal order) are facts, not problems
    per_class = frame["label"].value_counts()
    if per_class.min() < 10:
        problems.append(f"class {per_class.idxmin()!r} has only {per_class.min()} samples: wide CIs ahead")
    if per_class.max() > 10 * per_class.min():
        problems.append(f"imbalance {per_class.max()}:{per_class.min()}: consider --class-weights and read balanced accuracy")
    groups = None
    if table.has_groups:
        per_group = frame.groupby("group").size()
        groups = {"groups": int(per_group.size), "samples_per_group_max": int(per_group.max()),
                  "samples_per_group_mean": round(float(per_group.mean()), 2)}
        mixed = frame.groupby("group")["label"].nunique()
        if (mixed > 1).any():
            problems.append(f"{int((mixed > 1).sum())} group(s) hold more than one label")
    else:
        problems.append("no group column: if several images come from one patient, pass --group-col to avoid leakage")
    if duplicates and (duplicates["exact_pairs"] or duplicates["near_pairs"]):
        problems.append(duplicate_problem(duplicates))
    return {"duplicates": duplicates, "source": table.source, "layout": table.layout, "samples": len(frame), "classes": table.classes,
            "counts": counts, "groups": groups, "sizes": dict(sizes.most_common(5)), "channels": dict(channels),
            "sampled": len(picked), "notes": list(table.notes), "problems": problems}


def render(report: dict) -> str:
    """Plain-text rendering of an inspection report."""
    lines = [f"{report['source']}: {report['samples']} samples, {len(report['classes'])} classes"]
    if report.get("layout"):  # how the source was read, and why (split folders by name, by --split-dirs, …)
        lines.append(f"layout: {report['layout']}")
    lines += ["", report["counts"].to_string(), ""]
    if report["groups"]:
        g = report["groups"]
        lines.append(f"groups: {g['groups']} (images per group: mean {g['samples_per_group_mean']}, "
                     f"max {g['samples_per_group_max']})")
    lines.append(f"image sizes (WxH, of {report['sampled']} sampled): "
                 + ", ".join(f"{k} ×{v}" for k, v in report["sizes"].items()))
    lines.append("channels: " + ", ".join(f"{k} ×{v}" for k, v in report["channels"].items()))
    if report.get("duplicates"):
        lines.append(f"duplicates: {summary_line(report['duplicates'])}")
    lines += [f"note: {note}" for note in report.get("notes", [])]
    lines.append("problems: " + ("none found" if not report["problems"] else ""))
    lines += [f"  - {p}" for p in report["problems"]]
    return "\n".join(lines)


def render_volumes(report: dict, sheet: Path | None) -> str:
    """Plain-text rendering of a volume set's description (patients, modalities, grids, slices, labels)."""
    lines = [f"{report['root']}: {report['patients']} patients; modalities {', '.join(report['modalities'])} "
             f"(reference grid: {report['reference']}); {report['plane']} slices by {report['slices_rule']}", ""]
    lines.append("labels: " + ", ".join(f"{k} ×{v}" for k, v in report["labels"].items()))
    for modality, grids in report["grids"].items():
        lines.append(f"{modality}: " + ", ".join(f"{g} ×{n}" for g, n in grids.items()))
    s = report["slices"]
    lines.append(f"slices: {s['total']} (per patient {s['per_patient_min']}–{s['per_patient_max']})")
    incomplete = {p: e["missing"] for p, e in report["per_patient"].items() if e["missing"]}
    lines.append("missing modalities: " + (", ".join(f"{p}: {m}" for p, m in incomplete.items()) or "none"))
    if sheet:
        lines.append(f"contact sheet: {sheet}")
    lines.append("problems: " + ("none found" if not report["problems"] else ""))
    lines += [f"  - {p}" for p in report["problems"]]
    return "\n".join(lines)


def render_npz_volumes(report: dict, sheet: Path | None) -> str:
    """Plain-text rendering of a 3D MedMNIST file's volumes: size, volumes and labels per split, slices per volume."""
    lines = [f"volumes of {report['volume_shape']} (D x H x W), each its own patient and in one split:"]
    for split, entry in report["splits"].items():
        labels = ", ".join(f"{k} ×{v}" for k, v in entry["labels"].items())
        lines.append(f"  {split}: {entry['volumes']} volumes (labels {labels})")
    s = report["slices"]
    lines.append(f"slices: {s['total']} (per volume {s['per_volume_min']}–{s['per_volume_max']})")
    if sheet:
        lines.append(f"contact sheet: {sheet}")
    return "\n".join(lines)
