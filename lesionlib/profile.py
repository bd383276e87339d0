"""Profiles of the experiment grid: one typed definition of every setting and its default.

``experiments.yaml`` (project root, or ``$LESIONLIB_EXPERIMENTS``) holds named profiles — ``quick``
(2 CPU cores, the embedded default of ``make book``), ``cpu`` (about 2 hours on 2 cores), ``gpu``
and ``paper`` (the paper's settings). :func:`load_profile` reads one into a :class:`Profile`:

* every key is typed and every default lives in these classes (or, for a method's own settings,
  in that method's ``Settings`` class, see :mod:`lesionlib.segmenters`), so the YAML only says
  what a profile changes;
* an unknown key anywhere is an error naming the key and the profile (a typo such as
  ``epochs_finetun`` never trains silently with a default);
* a researcher keeps profiles of their own outside the repository, in files listed by
  ``$LESIONLIB_PROFILES`` (or ``lesionlib --profiles FILE``); a profile with ``extends: paper`` starts from
  the built-in ``paper`` and changes only the keys it lists (mappings merge key by key, lists and
  values are replaced), validated like the built-in ones::

      # my.yaml        LESIONLIB_PROFILES=my.yaml PROFILE=mine make book
      profiles:
        mine: {extends: paper, seeds: [0], methods: {unet: {batch_size: 4}}}

Layout of a profile (all sections optional)::

    description: "..."
    extends: paper
    device: cpu | cuda | auto
    seeds: [0, 1, 2]
    data: {adult_dataset, child_dataset, resolution_mm, n_adult, n_children, synth_seed,
           child_session2_masks}
    splits: {adult_val_fraction, adult_split_seed, few_shot_n, subset_min_volume_ml,
             cerebellum_rule}
    grid: {methods, adult_train_sets, ablation_train_sets, fine_tune, child_only}
    methods: {unet: {...}, resunet: {...}, nnunet: {...}, lesiongnb: {...}}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lesionlib import config

__all__ = [
    "ProfileError",
    "StrictModel",
    "DataSettings",
    "SplitSettings",
    "GridSettings",
    "Profile",
    "ADULT_TRAIN_SETS",
    "load_profile",
    "profile_names",
    "deep_merge",
]

ADULT_TRAIN_SETS: tuple[str, ...] = ("adult_full", "adult_subset")
"""The paper's two adult training sets: every ATLAS training image, and the subset rule's images."""


class ProfileError(ValueError):
    """A profile is unknown or malformed; the message names the profile, the file and the key."""


class StrictModel(BaseModel):
    """Base of every settings class: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSettings(StrictModel):
    """Which cohorts a profile uses and, for the synthetic ones, how they are generated.

    ``resolution_mm`` is both the voxel size of the synthetic cohorts (1 mm: ATLAS's own grid) and
    the isotropic working resolution of the networks. ``child_session2_masks``: ``'dataset'`` uses
    the session-2 masks the dataset provides; ``'propagated'`` replaces them with the session-1
    masks carried onto session 2 by 12-dof affine registration, as the paper obtained them
    (needed for real data that only has session-1 masks).
    """

    adult_dataset: str = "synthetic_adult"
    child_dataset: str = "synthetic_child"
    resolution_mm: float = Field(1.0, gt=0, le=10)
    n_adult: int = Field(655, ge=2)
    n_children: int = Field(20, ge=2)
    synth_seed: int = 2024
    child_session2_masks: Literal["dataset", "propagated"] = "dataset"


class SplitSettings(StrictModel):
    """How training, validation and test images are chosen.

    The adult cohort is split once, subject-level, ``adult_val_fraction`` to validation with
    ``adult_split_seed`` (the same for every run of a profile); the subset rule is then applied to
    each side. ``few_shot_n`` child images (one session each of that many children, stratified by
    lesion volume, drawn with the run's seed) are the fine-tuning and child-only training set.
    ``cerebellum_rule``: ``'auto'`` uses the manifest's ``cerebellum_atlas`` asset when it is
    configured (a case is excluded if any lesion voxel overlaps the cerebellum) and otherwise the
    MNI posterior-fossa box (a case is excluded if half of a lesion component lies in the box).
    """

    adult_val_fraction: float = Field(0.2, gt=0, lt=1)
    adult_split_seed: int = 0
    few_shot_n: int = Field(5, ge=1)
    subset_min_volume_ml: float = Field(2.5, ge=0)
    cerebellum_rule: Literal["auto", "atlas", "box"] = "auto"


class GridSettings(StrictModel):
    """Which cells of the paper's grid a profile runs (all of them by default).

    ``methods`` are registry names (:mod:`lesionlib.segmenters`), in the order tables show them;
    ``None`` means every registered method of the paper (ablations such as ``resunet_scratch`` run only
    where listed). Methods that fine-tune (the networks) get, per seed, a cell per adult training set,
    the same fine-tuned on the child images (``fine_tune``), and one trained on the child images alone
    (``child_only``); LesionGnb gets one cell per seed. Ablations are trained on ``ablation_train_sets``
    (those of ``adult_train_sets`` listed there), fine-tuned and trained on the child images alike.
    """

    methods: tuple[str, ...] | None = None
    adult_train_sets: tuple[Literal["adult_full", "adult_subset"], ...] = ADULT_TRAIN_SETS
    ablation_train_sets: tuple[Literal["adult_full", "adult_subset"], ...] = ("adult_full",)
    fine_tune: bool = True
    child_only: bool = True


class Profile(StrictModel):
    """One profile of ``experiments.yaml``, fully resolved (see the module docstring)."""

    name: str
    description: str = ""
    extends: str | None = None
    """The profile this one starts from (``extends:``), if any."""
    defined_in: str = ""
    """The file that defines this profile (``experiments.yaml`` or one of ``$LESIONLIB_PROFILES``)."""
    device: Literal["cpu", "cuda", "auto"] = "auto"
    seeds: tuple[int, ...] = (0,)
    data: DataSettings = DataSettings()
    splits: SplitSettings = SplitSettings()
    grid: GridSettings = GridSettings()
    methods: dict[str, Any] = Field(default_factory=dict)
    """Per-method settings, each an instance of that method's ``Settings`` class."""

    @field_validator("seeds")
    @classmethod
    def _seeds_not_empty(cls, seeds: tuple[int, ...]) -> tuple[int, ...]:
        if not seeds:
            raise ValueError("needs at least one seed")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat: {list(seeds)}")
        return seeds

    @model_validator(mode="after")
    def _resolve_methods(self) -> "Profile":
        from lesionlib.segmenters import ablation_names, get_segmenter, segmenter_names

        known = segmenter_names()
        listed = self.grid.methods if self.grid.methods is not None else tuple(
            m for m in known if m not in ablation_names())
        unknown = sorted(set(listed) - set(known)) + sorted(set(self.methods) - set(known))
        if unknown:
            raise ValueError(f"unknown methods {sorted(set(unknown))}; registered methods are {known}")
        resolved = {}
        for name in known:
            raw = self.methods.get(name, {})
            settings_cls = get_segmenter(name).Settings
            if isinstance(raw, settings_cls):
                resolved[name] = raw
            else:
                try:
                    resolved[name] = settings_cls.model_validate(raw or {})
                except ValidationError as exc:
                    raise ValueError(_explain(exc, prefix=f"methods.{name}")) from None
        object.__setattr__(self, "methods", resolved)
        object.__setattr__(self, "grid", self.grid.model_copy(update={"methods": tuple(listed)}))
        return self

    @property
    def method_names(self) -> tuple[str, ...]:
        """Methods of this profile's grid, in table order."""
        return tuple(self.grid.methods or ())

    def method(self, name: str) -> Any:
        """The ``Settings`` instance of method ``name``."""
        try:
            return self.methods[name]
        except KeyError:
            raise ProfileError(f"profile {self.name!r} has no method {name!r}; it has {sorted(self.methods)}") from None

    @property
    def data_source(self) -> str:
        """``'synthetic'`` when both cohorts are synthetic (the manifest's ``kind``), ``'rehearsal'`` when a
        real dataset's root holds synthetic stand-ins (:mod:`lesionlib.rehearsal`) and none is real, else
        ``'real'``."""
        from lesionlib.data.manifest import data_source

        kinds = {data_source(self.data.adult_dataset, profile=self.name),
                 data_source(self.data.child_dataset, profile=self.name)}
        if kinds == {"synthetic"}:
            return "synthetic"
        return "real" if "real" in kinds else "rehearsal"

    def to_dict(self) -> dict[str, Any]:
        """Every setting, defaults included, as plain YAML types."""
        out = self.model_dump(mode="json")
        out["methods"] = {k: v.model_dump(mode="json") for k, v in self.methods.items()}
        return out


def _explain(exc: ValidationError, prefix: str = "") -> str:
    """pydantic's errors as ``'key.path: message'`` lines (unknown keys say so)."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        message = "unknown key (not a setting of this section)" if err["type"] == "extra_forbidden" else err["msg"]
        message = message.removeprefix("Value error, ")
        lines.append(f"{loc}: {message}" if loc else message)
    return "; ".join(lines)


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read the profiles file ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML ({exc})") from exc
    profiles = data.get("profiles") if isinstance(data, dict) else None
    if not isinstance(profiles, dict):
        raise ProfileError(f"{path}: expected a top-level mapping 'profiles:'")
    for name, raw in profiles.items():
        if raw is not None and not isinstance(raw, dict):
            raise ProfileError(f"{path}: profile {name!r} must be a mapping")
    return profiles


def _sources(path: os.PathLike | str | None) -> list[Path]:
    """The profile files in lookup order: the built-in file (or ``path``), then the researcher's own."""
    if path is not None:
        return [Path(path)]
    return [config.experiments_file(), *config.own_profile_files()]


def _all_profiles(path: os.PathLike | str | None = None) -> dict[str, tuple[dict[str, Any], Path]]:
    """Every profile name -> (its raw mapping, the file defining it); a name defined twice is an error."""
    found: dict[str, tuple[dict[str, Any], Path]] = {}
    for source in _sources(path):
        for name, raw in _read(source).items():
            if name in found:
                raise ProfileError(f"profile {name!r} is defined in both {found[name][1]} and {source}: give yours "
                                   f"another name and `extends: {name}`")
            found[name] = (raw or {}, source)
    return found


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied: mappings merge key by key (recursively), anything else is replaced.

    Lists are replaced whole (``seeds: [0]`` means one seed, not a fourth one).
    """
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _resolve_extends(name: str, profiles: dict[str, tuple[dict[str, Any], Path]],
                     chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """The raw mapping of ``name`` with its ``extends:`` chain merged in (base first)."""
    raw, source = profiles[name]
    raw = dict(raw)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ProfileError(f"{source}: profile {name!r}: extends: expected the name of one profile, got {parent!r}")
    if parent in chain or parent == name:
        raise ProfileError(f"{source}: profile {name!r}: extends: cycle {' -> '.join((*chain, name, parent))}")
    if parent not in profiles:
        raise ProfileError(f"{source}: profile {name!r}: extends: unknown profile {parent!r}; known: {sorted(profiles)}")
    base = _resolve_extends(parent, profiles, (*chain, name))
    base.pop("description", None)  # a description describes its own profile
    return deep_merge(base, raw)


def profile_names(path: os.PathLike | str | None = None) -> list[str]:
    """Names of the built-in profiles (``experiments.yaml``, or ``path``) and of ``$LESIONLIB_PROFILES``."""
    return list(_all_profiles(path))


def load_profile(name: str = config.DEFAULT_PROFILE, path: os.PathLike | str | None = None) -> Profile:
    """Read and validate profile ``name``.

    Profiles come from ``experiments.yaml`` (or ``path``) and, unless ``path`` is given, from the
    researcher's own files listed in ``$LESIONLIB_PROFILES`` (see :func:`lesionlib.config.own_profile_files`).
    A profile with ``extends: BASE`` starts from ``BASE`` (itself possibly extending another) and changes
    only the keys it lists (:func:`deep_merge`); the result is validated like any profile.

    Raises
    ------
    ProfileError
        Unknown profile, unreadable file, a name defined twice, an ``extends`` cycle or unknown base, or an
        invalid or unknown key (named with its path, e.g. ``methods.unet.epochs_finetun: unknown key``).
    """
    profiles = _all_profiles(path)
    if name not in profiles:
        where = " and ".join(str(p) for p in _sources(path))
        raise ProfileError(f"unknown profile {name!r} in {where}; known: {sorted(profiles)}")
    raw, source = profiles[name]
    merged = _resolve_extends(name, profiles)
    extends = raw.get("extends")
    try:
        return Profile.model_validate({"name": name, **merged, "extends": extends, "defined_in": str(source)})
    except ValidationError as exc:
        raise ProfileError(f"{source}: profile {name!r}: {_explain(exc)}") from None
    except ValueError as exc:
        raise ProfileError(f"{source}: profile {name!r}: {exc}") from None
