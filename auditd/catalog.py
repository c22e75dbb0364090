"""Building the catalog: profiles, references and model globs, cross-checked.

``config`` reads each file on its own; only here are they checked against each other (a
reference naming a model no profile defines, a reference sensor its model lacks, a
``[models]`` glob pointing at nothing). ``build_catalog`` does that once, at start-up and on
reload, so that the pure lookups of the ``Catalog`` it returns (``auditd.domain.catalog``),
which the ingest and audit paths call per message or per stream, never have to fail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from auditd.config import DaemonConfig, load_profiles, load_references
from auditd.domain.catalog import Catalog
from auditd.errors import ConfigError
from auditd.model import Profile, Reference

__all__ = ["build_catalog", "load_catalog"]


def build_catalog(profiles: Mapping[str, Profile], references: Iterable[Reference],
                  models: Mapping[str, str], source: str = "") -> Catalog:
    """A Catalog whose parts agree with each other, or a ConfigError naming the culprit.

    ``source`` is the daemon config file holding ``models``, for its error messages.
    """
    refs = tuple(references)
    _check_reference_ids(refs)
    for key, ref in _keyed(refs):
        _check_reference_model(profiles, key, ref)
    known = _known_models(profiles)
    for glob, model in models.items():
        if model not in profiles:
            raise ConfigError(source or "<config>", f'models."{glob}"',
                              f"model {model!r} has no device profile ({known})")
    return Catalog(profiles=profiles, references=refs, models=models)


def load_catalog(cfg: DaemonConfig) -> Catalog:
    """Read the profile and reference directories ``cfg`` names and cross-check them."""
    return build_catalog(load_profiles(cfg.profiles_dir), load_references(cfg.references_dir),
                         cfg.models, cfg.source)


def _keyed(refs: tuple[Reference, ...]) -> Iterable[tuple[str, Reference]]:
    """Each reference with the ``reference[N]`` key it has inside its own file."""
    seen: dict[str, int] = {}
    for ref in refs:
        index = seen.get(ref.source, 0)
        seen[ref.source] = index + 1
        yield f"reference[{index}]", ref


def _check_reference_ids(refs: tuple[Reference, ...]) -> None:
    first: dict[str, Reference] = {}
    for key, ref in _keyed(refs):
        if ref.id in first:
            raise ConfigError(ref.source or "<references>", f"{key}.id",
                              f"reference {ref.id!r} is already defined in "
                              f"{first[ref.id].source or 'another entry'}")
        first[ref.id] = ref


def _check_reference_model(profiles: Mapping[str, Profile], key: str, ref: Reference) -> None:
    """The instrument's own profile must exist and measure every sensor it is trusted for."""
    if ref.model is None:
        return
    file = ref.source or "<references>"
    profile = profiles.get(ref.model)
    if profile is None:
        raise ConfigError(file, f"{key}.model", f"reference {ref.id!r} names model "
                          f"{ref.model!r}, which has no device profile "
                          f"({_known_models(profiles)})")
    missing = [s for s in ref.sensors if s not in profile.sensors]
    if missing:
        raise ConfigError(file, f"{key}.sensors", f"reference {ref.id!r}: model "
                          f"{ref.model!r} has no sensor {', '.join(map(repr, missing))} "
                          f"(its sensors: {', '.join(profile.sensors)})")


def _known_models(profiles: Mapping[str, Profile]) -> str:
    return f"known models: {', '.join(sorted(profiles))}" if profiles else "no profiles loaded"
