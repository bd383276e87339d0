"""What every cell of a profile trains on and is evaluated on: :func:`make_splits`, the one definition.

For a profile and a seed (the CLI ``lesionlib train`` and the grid use the same function):

* **adult split** — the adult cohort split once, subject-level, ``splits.adult_val_fraction`` to
  validation with ``splits.adult_split_seed`` (fixed, so every run validates on the same adults);
* **adult subset** — the paper's rule (lesion >= ``splits.subset_min_volume_ml`` mL and no
  cerebellar lesion, :func:`lesionlib.samplers.atlas_subset`) applied to each side of that split;
* **few-shot** — ``splits.few_shot_n`` child images (one session each of that many children,
  stratified by lesion volume, drawn with the run's seed) for fine-tuning and child-only training;
* **session-2 masks** — with ``data.child_session2_masks: propagated`` (the paper's protocol, for
  real data with session-1 masks only) every later-session mask is the session-1 mask carried onto
  that session by 12-dof affine registration (:func:`lesionlib.register.propagate_records`,
  run by the data stage into ``<results>/<profile>/_shared/session2_masks/``); with ``dataset`` the
  dataset's own masks are used;
* **evaluation sets** — ``adult_val`` (the validation side of the cell's adult training set),
  ``child_test`` (every image of the children *not* drawn for the few-shot set: the same images
  for every cell of a seed, fine-tuned or not, so that columns compare pairwise) and
  ``child_all`` (every child image, for models that never saw a child).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lesionlib.data.records import ImageRecord

if TYPE_CHECKING:
    from lesionlib.profile import Profile
    from lesionlib.samplers import FewShotSplit

__all__ = ["EVAL_SETS", "TRAIN_SETS", "TRAIN_SET_LABELS", "Splits", "make_splits", "session2_root",
           "with_propagated_masks", "split_first_sessions"]

log = logging.getLogger(__name__)

TRAIN_SETS: tuple[str, ...] = ("adult_full", "adult_subset", "child5")
"""Training sets of the grid: the two adult sets and the few child images (named for the paper's five)."""
EVAL_SETS: tuple[str, ...] = ("adult_val", "child_test", "child_all")
"""Evaluation sets, in table order."""
TRAIN_SET_LABELS: dict[str, str] = {"adult_full": "ATLAS full", "adult_subset": "ATLAS subset",
                                    "child5": "child images"}
"""How tables and figures name the training sets."""


@dataclass
class Splits:
    """The records of one profile and seed, and every split drawn from them (see the module docstring)."""

    seed: int
    data_source: str
    adult: list[ImageRecord]
    child: list[ImageRecord]
    adult_train: list[ImageRecord]
    adult_val: list[ImageRecord]
    subset_train: list[ImageRecord]
    subset_val: list[ImageRecord]
    subset_report: dict[str, Any]
    few_shot: "FewShotSplit"
    adult_split_seed: int

    def training(self, train_set: str, fine_tuned: bool = False) -> tuple[list[ImageRecord], list[ImageRecord]]:
        """``(train, validation)`` records of a cell.

        Fine-tuned and child-only cells train on the few-shot child images (no validation images);
        adult cells on their adult set's training side, validated on its validation side.
        """
        if fine_tuned or train_set == "child5":
            return list(self.few_shot.train), []
        if train_set == "adult_full":
            return list(self.adult_train), list(self.adult_val)
        if train_set == "adult_subset":
            return list(self.subset_train), list(self.subset_val)
        raise ValueError(f"unknown training set {train_set!r}; known {list(TRAIN_SETS)}")

    def evaluation(self, train_set: str, fine_tuned: bool = False) -> dict[str, list[ImageRecord]]:
        """``{eval_set: records}`` of a cell: ``child_test`` always; ``adult_val`` and ``child_all``
        for models trained on adults only (``adult_val`` is the validation side of their set)."""
        out: dict[str, list[ImageRecord]] = {}
        if not fine_tuned and train_set in ("adult_full", "adult_subset"):
            out["adult_val"] = self.training(train_set)[1]
        out["child_test"] = list(self.few_shot.test)
        if not fine_tuned and train_set != "child5":
            out["child_all"] = list(self.child)
        return out

    def describe(self) -> dict[str, Any]:
        """Serialisable description of every split (a cell writes it as ``split.yaml``)."""
        return {
            "seed": self.seed,
            "data_source": self.data_source,
            "adult_split_seed": self.adult_split_seed,
            "adult_train": [r.case_id for r in self.adult_train],
            "adult_val": [r.case_id for r in self.adult_val],
            "subset_train": [r.case_id for r in self.subset_train],
            "subset_val": [r.case_id for r in self.subset_val],
            "subset_report": self.subset_report,
            "few_shot": self.few_shot.to_dict(),
        }


def session2_root(profile: str, results_root: Path | None = None) -> Path:
    """Where propagated session-2 masks of a profile live: ``<results>/<profile>/_shared/session2_masks``."""
    from lesionlib import config

    return Path(results_root or config.results_root()) / profile / "_shared" / "session2_masks"


def split_first_sessions(records: list[ImageRecord]) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """(each subject's first-session records, its later sessions with ``mask_path=None``).

    For a cohort whose later-session masks are propagated (``data.child_session2_masks: propagated``): those
    masks are not read from the dataset (a paediatric cohort like the paper's has none), so their sessions
    are checked as images only until :func:`with_propagated_masks` gives them their masks.
    """
    first: dict[str, str] = {}
    for r in sorted(records, key=lambda r: (r.subject, r.session)):
        first.setdefault(r.subject, r.session)
    later = [dataclasses.replace(r, mask_path=None, lesion_volume_ml=None) for r in records
             if r.session != first[r.subject]]
    return [r for r in records if r.session == first[r.subject]], later


def with_propagated_masks(records: list[ImageRecord], root: Path) -> list[ImageRecord]:
    """``records`` with every session but each subject's first given its propagated mask under ``root``.

    Raises :class:`lesionlib.io.DataValidationError` naming the missing file when a mask has not been
    propagated yet.
    """
    from lesionlib import bids
    from lesionlib.data.discovery import mask_volume_ml
    from lesionlib.io import DataValidationError

    first = {}
    for r in sorted(records, key=lambda r: (r.subject, r.session)):
        first.setdefault(r.subject, r.session)
    out = []
    for r in records:
        if r.session == first[r.subject]:
            out.append(r)
            continue
        path = bids.prediction_path(root, r.subject, r.session, desc="propagated")
        if not path.is_file():
            raise DataValidationError(path, f"session-{r.session} mask of sub-{r.subject} not propagated yet: the data "
                                            "stage writes it (`lesionlib grid report --notebook data`)")
        out.append(dataclasses.replace(r, mask_path=path, lesion_volume_ml=mask_volume_ml(path)))
    return out


def make_splits(profile: "Profile", seed: int, *, progress: bool = False) -> Splits:
    """Discover the profile's two cohorts and draw every split for ``seed`` (see the module docstring).

    Raises :class:`lesionlib.io.DataValidationError` when a cohort is missing or any of its files is
    invalid (all of them named), and
    ``ValueError`` when the child cohort has fewer children than ``splits.few_shot_n``.
    """
    from lesionlib.data.validate import discover_valid
    from lesionlib.samplers import atlas_subset, few_shot_split, train_val_split

    data, rules = profile.data, profile.splits
    # every file of both cohorts valid before anything is drawn (a grid run stops before any cell)
    # (an empty mask is reported once, by the data stage's validation, not by every cell)
    adult = discover_valid(data.adult_dataset, purpose="evaluate", warn=False, profile=profile.name, progress=progress)
    if data.child_session2_masks == "propagated":  # later sessions' masks: propagated by the data stage
        from lesionlib.data.discovery import discover
        from lesionlib.data.validate import require_valid

        first, later = split_first_sessions(discover(data.child_dataset, profile=profile.name, progress=progress))
        require_valid(first, purpose="evaluate", progress=progress)
        require_valid(later, purpose="predict", progress=progress)
        child = with_propagated_masks(first + later, session2_root(profile.name))
    else:
        child = discover_valid(data.child_dataset, purpose="evaluate", warn=False, profile=profile.name,
                               progress=progress)
    adult_train, adult_val = train_val_split(adult, val_fraction=rules.adult_val_fraction,
                                             seed=rules.adult_split_seed)
    kept, report = atlas_subset(adult, min_volume_ml=rules.subset_min_volume_ml, rule=rules.cerebellum_rule,
                                progress=progress)
    kept_ids = {r.case_id for r in kept}
    return Splits(
        seed=int(seed), data_source=profile.data_source, adult=adult, child=child,
        adult_train=adult_train, adult_val=adult_val,
        subset_train=[r for r in adult_train if r.case_id in kept_ids],
        subset_val=[r for r in adult_val if r.case_id in kept_ids],
        subset_report=report.to_dict(), few_shot=few_shot_split(child, n_images=rules.few_shot_n, seed=seed),
        adult_split_seed=rules.adult_split_seed,
    )
