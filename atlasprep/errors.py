"""The one error hierarchy of atlasprep.

Every leaf also inherits the builtin a caller would already catch (``KeyError`` for an
unknown term, ``FileExistsError`` for an output that exists …), so library users need not
learn our names. The CLI turns any :class:`AtlasprepError` into a one-line ``Error: …``;
``exit_code`` says whether it was the user's input (2) or the work that failed (1).

A message names config fields and function arguments, never command-line flags: it starts
with the field (``pixel_size_um = 0: must be > 0``, ``out x.h5ad exists; …``) and hints with
``set <field>`` (``set overwrite to replace it``). The CLI turns those into its flags
(``--pixel-size 0: …``, ``pass --overwrite …``), the recipe loader into ``[table] key``.
"""

from __future__ import annotations

__all__ = [
    "AmbiguousTermError",
    "AtlasprepError",
    "CorruptStoreError",
    "EmptyResultError",
    "ForeignOutputError",
    "IncompleteMappingError",
    "InputFormatError",
    "NetworkError",
    "OutputExistsError",
    "SourceError",
    "UnknownTermError",
    "UnsafePathError",
    "UsageError",
]


class AtlasprepError(Exception):
    """Root of every error atlasprep raises on purpose."""

    exit_code: int = 1

    def __str__(self) -> str:  # KeyError's str() quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else self.__class__.__name__


class UsageError(AtlasprepError, ValueError):
    """Bad options or arguments: the user can fix the command line."""

    exit_code = 2


class UnknownTermError(AtlasprepError, KeyError):
    """A label, synonym or ID that no ontology (or alias) knows."""

    exit_code = 2

    def __init__(self, message: str, *, query: str, suggestions: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.query = query
        self.suggestions = suggestions


class AmbiguousTermError(AtlasprepError, KeyError):
    """A name that matches several terms equally well; we refuse to guess."""

    exit_code = 2

    def __init__(self, message: str, *, query: str, candidates: tuple[str, ...]) -> None:
        super().__init__(message)
        self.query = query
        self.candidates = candidates


class SourceError(AtlasprepError, OSError):
    """A source that cannot be opened or read (missing store, wrong layout, no network)."""

    exit_code = 2


class NetworkError(SourceError):
    """A remote source that cannot be reached (no network, proxy, DNS, the service down): the
    world failed, not the command line (exit 1; the same command may work later)."""

    exit_code = 1


class InputFormatError(AtlasprepError, ValueError):
    """An input whose content does not fit what the command needs (missing column, non-integer X …)."""

    exit_code = 2


class OutputExistsError(AtlasprepError, FileExistsError):
    """The output exists; set ``overwrite`` to replace it."""

    exit_code = 2


class EmptyResultError(AtlasprepError):
    """The query matched no cells."""

    exit_code = 1


class IncompleteMappingError(AtlasprepError):
    """``HarmonizeConfig.strict``: values or genes stayed unmapped (the report lists them)."""

    exit_code = 1


class UnsafePathError(AtlasprepError, ValueError):
    """A path read from a file (manifest, recipe) that is absolute or leads out of its root."""

    exit_code = 2


class ForeignOutputError(AtlasprepError, FileExistsError):
    """An output location holding something atlasprep did not write: never written into or deleted."""

    exit_code = 2


class CorruptStoreError(AtlasprepError, ValueError):
    """A token store that does not match its manifest (tampered, damaged, or mixed with other files)."""

    exit_code = 1
