"""The catalog: what the daemon knows about models and reference instruments.

An immutable lookup over the profiles, the reference entries and the ``[models]`` globs,
which the ingest and audit paths call per message or per stream and which therefore never
fails. Reading the files and checking them against each other is the configuration
adapter's job (``auditd.adapters.config.catalog.build_catalog``); a catalog it returns is
consistent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType

from auditd.model import Profile, Reference

__all__ = ["Catalog"]


@dataclass(frozen=True)
class Catalog:
    """What the daemon knows about models and reference instruments; immutable.

    A reload builds a new Catalog and swaps it in whole, so a reader never sees a half
    updated one. Globs match case-sensitively (``fnmatchcase``) because device ids are.
    """

    profiles: Mapping[str, Profile] = field(default_factory=dict)
    references: tuple[Reference, ...] = ()
    models: Mapping[str, str] = field(default_factory=dict)
    """Device-id glob -> model, tried in order, for devices whose meta names no model."""
    unit_aliases: Mapping[str, str] = field(default_factory=dict)
    """The site's own unit spellings -> the pint unit each means (``[units] aliases``),
    looked up by the gate before pint reads a reading's unit."""
    _by_id: Mapping[str, Reference] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "profiles", MappingProxyType(dict(self.profiles)))
        object.__setattr__(self, "references", tuple(self.references))
        object.__setattr__(self, "models", MappingProxyType(dict(self.models)))
        object.__setattr__(self, "unit_aliases", MappingProxyType(dict(self.unit_aliases)))
        object.__setattr__(self, "_by_id", MappingProxyType(
            {ref.id: ref for ref in self.references}))

    def profile(self, model: str) -> Profile | None:
        return self.profiles.get(model)

    def reference(self, device: str) -> Reference | None:
        """The reference entry whose id is ``device``, if it is one."""
        return self._by_id.get(device)

    def is_reference(self, device: str) -> bool:
        return device in self._by_id

    def model_for(self, device: str, announced_model: str | None = None) -> str | None:
        """The model whose profile applies to ``device``, or None when nothing says.

        Precedence: what the device announces in its meta (it knows best, and a new variant
        must not be audited against an older model's tolerances just because a glob
        matches), then the model of a reference entry with this id, then the first
        ``models`` glob that matches. The result may have no profile: ``profile()`` says.
        """
        if announced_model and announced_model.strip():
            return announced_model.strip()
        ref = self._by_id.get(device)
        if ref is not None and ref.model:
            return ref.model
        return next((model for glob, model in self.models.items()
                     if fnmatchcase(device, glob)), None)

    def references_for(self, site: str, device: str) -> tuple[Reference, ...]:
        """The reference instruments co-located with ``device`` at ``site``, in file order.

        A reference never serves itself, even when its own id matches one of its globs.
        """
        return tuple(ref for ref in self.references
                     if ref.site == site and ref.id != device
                     and any(fnmatchcase(device, glob) for glob in ref.serves))
