"""The class names of the MedMNIST datasets, whose .npz files carry integer labels only.

The names are the official dataset information: the `INFO` dict of the `medmnist` package when it is installed,
else LABELS below, copied from medmnist/info.py of medmnist 3.0.2 (the package that lists the MD5s of the Zenodo
files). Cite: J. Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image
classification", Scientific Data 10, 41 (2023).

A file is recognised by its name stem, as Zenodo names them: `pneumoniamnist.npz`, `pneumoniamnist_64.npz`,
`breastmnist_224.npz`, `organmnist3d_64.npz`. Only names change: the classes keep the integer label order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd

COPIED_FROM = "medmnist 3.0.2"
CITATION = "Yang et al., Scientific Data 2023"

_ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
           "lung-right", "pancreas", "spleen")

# Position k is the name of integer label k. ChestMNIST is left out: it is multi-label, its 14 findings are not the
# classes of one label (and its files are refused as multi-label before names matter).
LABELS: dict[str, tuple[str, ...]] = {
    "pathmnist": ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
                  "cancer-associated stroma", "colorectal adenocarcinoma epithelium"),
    "dermamnist": ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                   "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                   "vascular lesions"),
    "octmnist": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    "pneumoniamnist": ("normal", "pneumonia"),
    "retinamnist": ("0", "1", "2", "3", "4"),  # diabetic retinopathy grades: the official names are the numbers
    "breastmnist": ("malignant", "normal, benign"),
    "bloodmnist": ("basophil", "eosinophil", "erythroblast",
                   "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte", "monocyte",
                   "neutrophil", "platelet"),
    "tissuemnist": ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
                    "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments",
                    "Thick Ascending Limb"),
    "organamnist": _ORGANS,
    "organcmnist": _ORGANS,
    "organsmnist": _ORGANS,
    # 3D sets (read by npz_volumes.py); OrganMNIST3D numbers its organs in another order than the 2D sets.
    "organmnist3d": ("liver", "kidney-right", "kidney-left", "femur-right", "femur-left", "bladder", "heart",
                     "lung-right", "lung-left", "spleen", "pancreas"),
    "nodulemnist3d": ("benign", "malignant"),
    "adrenalmnist3d": ("normal", "hyperplasia"),
    "fracturemnist3d": ("buckle rib fracture", "nondisplaced rib fracture", "displaced rib fracture"),
    "vesselmnist3d": ("vessel", "aneurysm"),
    "synapsemnist3d": ("inhibitory synapse", "excitatory synapse"),
}

# Binary sets whose official label 0 is the finding: downstream the second class is the positive one (sensitivity,
# PPV, ROC), so without --positive-class these would report the benign class's. The others list the finding second.
FINDING_FIRST = {"breastmnist": "malignant"}

# Zenodo's names: the dataset, then the image size for every size but the original 28 (28 for 3D too).
_STEM = re.compile(r"(?P<dataset>[a-z]+mnist(?:3d)?)(?:_(?:28|64|128|224))?")


@dataclass(frozen=True)
class ClassNames:
    """The official names of a file's integer labels, or why they were not used, and where they came from."""

    names: dict[int, str]  # empty when the file's labels do not fit the dataset's classes
    note: str


@cache
def official_labels() -> tuple[dict[str, tuple[str, ...]], str]:
    """Every single-label dataset's names by integer label, and their source: the installed package, else LABELS."""
    try:
        from medmnist.info import INFO, __version__
    except ImportError:
        return LABELS, f"MedMNIST v2 INFO ({COPIED_FROM}; {CITATION})"
    labels = {dataset: tuple(info["label"][str(k)] for k in range(len(info["label"])))
              for dataset, info in INFO.items() if "multi-label" not in info.get("task", "")}
    return labels, f"MedMNIST v2 INFO (installed medmnist {__version__}; {CITATION})"


def dataset_of(path: Path) -> str | None:
    """The MedMNIST dataset a file's name stem names (breastmnist_64.npz: breastmnist), None when it names none."""
    match = _STEM.fullmatch(Path(path).stem.lower())
    return match["dataset"] if match and match["dataset"] in official_labels()[0] else None


def class_names(path: Path, labels: list[int]) -> ClassNames | None:
    """The official names of LABELS (the integer labels a file holds) when its stem names a MedMNIST dataset."""
    dataset = dataset_of(path)
    if dataset is None:
        return None
    known, source = official_labels()
    names = known[dataset]
    outside = [label for label in labels if not 0 <= label < len(names)]
    if outside:  # not the official file, or relabelled: a wrong name would be worse than a number
        return ClassNames({}, f"labels {outside} are not among {dataset}'s {len(names)} classes: integer class "
                              "names kept")
    if all(names[label] == str(label) for label in labels):
        return None  # RetinaMNIST's grades are named by their numbers: nothing to rename
    listed = ", ".join(f"{label} {names[label]!r}" for label in labels)  # quoted: some names hold commas
    return ClassNames({label: names[label] for label in labels},
                      f"class names of {dataset} from {source}: {listed}")


def name_classes(path: Path, frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """A MedMNIST table's classes in integer label order, FRAME's integer `label`s renamed in place to the official
    names of the dataset PATH's stem names, and the note saying where they came from; integers for other files."""
    labels = sorted(int(label) for label in frame["label"].unique())  # "10" comes after "9"
    named = class_names(path, labels)
    if named is None:
        return [str(label) for label in labels], []
    if named.names:
        frame["label"] = frame["label"].map({str(label): name for label, name in named.names.items()})
    return [named.names.get(label, str(label)) for label in labels], [named.note]


def finding_first(source: str, classes: list[str]) -> str | None:
    """The finding of a binary MedMNIST set that lists it first (BreastMNIST: malignant), to be the positive class;
    None for every other table."""
    finding = FINDING_FIRST.get(dataset_of(Path(source)) or "")
    return finding if len(classes) == 2 and finding in classes and classes[0] == finding else None
