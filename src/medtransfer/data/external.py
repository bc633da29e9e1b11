"""External test sets: other data read with the run's source options, evaluated whole, classes matched by name."""

from __future__ import annotations

from dataclasses import dataclass, replace

from medtransfer.config import TrainConfig
from medtransfer.data.load import load_table
from medtransfer.data.table import COLUMNS, SampleTable
from medtransfer.data.volume_layout import UNLABELLED
from medtransfer.errors import UserError

EXTERNAL_SPLIT = "external:"  # predictions.csv's split of an external set's rows: `external:NAME`


@dataclass(frozen=True)
class ExternalSet:
    """One external test set: its name and DATA, its table in the training classes' order, and the training
    classes it lacks (a recorded warning: their recall, and every metric that needs every class, is not reported
    there)."""

    name: str
    data: str
    table: SampleTable
    missing: list[str]

    @property
    def split(self) -> str:
        """The set's split value in predictions.csv."""
        return f"{EXTERNAL_SPLIT}{self.name}"


def external_config(cfg: TrainConfig, name: str) -> TrainConfig:
    """The settings external set `name` is read with: the run's source options on its DATA, without what names
    training's own classes (their order and positive class are training's, applied by name afterwards), its splits
    (the set is read whole), its labels CSV (a volume set has its own, or its class folders), its subgroups or its
    external sets."""
    labels = (cfg.external_labels_csv or {}).get(name)
    return cfg.model_copy(update={"data": (cfg.external or {})[name], "external": None, "external_labels_csv": None,
                                  "subgroups": None, "class_order": None, "positive_class": None, "split_col": None,
                                  "split_dirs": None, "labels_csv": labels})


def match_classes(name: str, data: str, table: SampleTable, training: SampleTable) -> ExternalSet:
    """The external table with training's classes (targets by name); a class training does not know is refused."""
    subject = f"external set {name!r} ({data})"
    unknown = [c for c in table.classes if c not in training.classes]
    if unknown:
        raise UserError(subject, f"has class(es) {unknown} that training does not have (training's classes are "
                        f"{training.classes})", "relabel those images to training's class names, or leave them out "
                        "of the external set")
    missing = [c for c in training.classes if c not in table.classes]
    # Every row is a test row: an external set is never split, whatever splits its source predefines.
    frame = table.frame[list(COLUMNS)].assign(split="test")
    matched = replace(table, frame=frame, classes=list(training.classes), ordinal=training.ordinal,
                      notes=list(table.notes))
    return ExternalSet(name, data, matched, missing)


def load_external(cfg: TrainConfig, training: SampleTable) -> list[ExternalSet]:
    """Every external set of the run, loaded and matched to the training classes, in the order given."""
    found = []
    for name, data in (cfg.external or {}).items():
        try:
            table = load_table(external_config(cfg, name), whole=True)
        except UserError as exc:  # the set's own problem, named as the external set it is
            raise UserError(f"external set {name!r}: {exc.subject}", exc.problem, exc.fix) from None
        if cfg.modalities and table.classes == [UNLABELLED]:  # training's labels CSV is not the set's
            raise UserError(f"external set {name!r} ({data})", "has no labels: its patients are not in class folders "
                            "and it has no labels CSV of its own", f"pass --external-labels-csv {name}=CSV "
                            "(patient_id,label), or lay it out as DIR/<class>/<patient>/")
        found.append(match_classes(name, data, table, training))
    return found
