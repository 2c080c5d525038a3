"""Read HRA tissue-block registrations made with the Registration User Interface (RUI).

A registration is a RUI ``SpatialEntity``: a box of ``x/y/z_dimension`` (mm) with the
``ccf_annotations`` it collides with (UBERON/FMA IRIs) and a ``placement`` into a reference
organ (``target``, an IRI such as ``http://purl.org/ccf/latest/ccf.owl#VHFHeart``). Files come in
two shapes, both read here:

* one RUI JSON (``registrations/female-left-ventricle.json``): the ``SpatialEntity`` itself;
* a JSON-LD collection (``rui_locations.jsonld``): ``@graph`` → donors → ``samples`` → each
  sample's ``rui_location`` (an object, or that object as a JSON string, as the HuBMAP entity
  API serves it). Every sample gives one :class:`Registration` with ``sample_id`` set; samples
  of the same block share the block's ``id``.

Placement conventions, taken from the HRA code that draws and places blocks
(hubmapconsortium/ccf-ui: ``ccf-rui`` ``scene.state.ts`` ``placementCube`` and ccf-database
``spatial-graph.ts`` ``applySpatialPlacement``; the same in hra-api)::

    Matrix4().translate(T).rotateXYZ(R).scale(S)   applied to a unit cube scaled by dimension / 2

* the block is centred on its own origin: its corners are at ±dimension/2 (mm);
* a block-local point ``p`` lands at ``T + Rx·Ry·Rz·(S ⊙ p)`` in the reference organ's frame:
  scaling first (a ratio), then the rotation — math.gl's ``rotateXYZ`` post-multiplies X, then
  Y, then Z, so ``R = Rx·Ry·Rz`` (three.js Euler order ``"XYZ"``), angles in degrees — then
  the translation in millimetres (centimetre and metre placements are converted, as
  ``applySpatialPlacement`` does). Other ``rotation_order`` values compose in their letters'
  order (``"ZYX"`` → ``Rz·Ry·Rx``); the HRA itself only writes ``"XYZ"``.

The RUI writes all nine placement components and the HRA reads each, so an absent one is
refused as a null one is; so are non-finite values, a scaling ≤ 0 (a collapsed or mirrored
block) and a block placed more than ``MAX_REACH_MM`` from the organ's origin.

Where the reference organ's frame has its origin is the organ loader's business
(:mod:`atlasprep.align.organ`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atlasprep.errors import InputFormatError, SourceError, UsageError

__all__ = [
    "Placement",
    "Registration",
    "iri_fragment",
    "iri_to_curie",
    "parse_registration",
    "read_registration",
    "read_registrations",
]

_LENGTH_TO_MM = {"millimeter": 1.0, "centimeter": 10.0, "meter": 1000.0, "micrometer": 1e-3}
_ANGLE_TO_DEG = {"degree": 1.0, "radian": 180.0 / math.pi}
_OBO_IRI = re.compile(r"^https?://purl\.obolibrary\.org/obo/([A-Za-z]+)_(\w+)$")
_FMA_IRI = re.compile(r"^https?://purl\.org/sig/ont/fma/fma(\d+)$")
_FMA_CURIE = re.compile(r"^fma:(?:fma:?)?(\d+)$", re.IGNORECASE)

Triple = tuple[float, float, float]
MAX_REACH_MM = 1e6  # how far from the organ's origin a placed block may reach (1 km: any real organ fits)


def iri_to_curie(iri: str) -> str:
    """``http://purl.obolibrary.org/obo/UBERON_0002084`` → ``UBERON:0002084``;
    ``http://purl.org/sig/ont/fma/fma7264`` (or the crosswalk's ``fma:fma:7264``) → ``FMA:7264``.
    Anything else (a CURIE already, an unknown IRI) comes back unchanged."""
    text = iri.strip()
    if match := _OBO_IRI.match(text):
        return f"{match[1]}:{match[2]}"
    if (match := _FMA_IRI.match(text)) or (match := _FMA_CURIE.match(text)):
        return f"FMA:{match[1]}"
    return text


def iri_fragment(iri: str) -> str:
    """The ``#…`` end of an IRI (``…ccf.owl#VHFHeart`` → ``#VHFHeart``), or the IRI itself."""
    return iri[iri.index("#") :] if "#" in iri else iri


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    """Where a block sits in its reference organ (units already converted: mm, degrees)."""

    target: str
    scaling: Triple
    rotation_deg: Triple
    rotation_order: str
    translation_mm: Triple
    placement_date: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    """One RUI tissue block: its size, placement and collision annotations."""

    id: str
    dimensions_mm: Triple
    placement: Placement
    ccf_annotations: tuple[str, ...]
    sample_id: str = ""
    creation_date: str = ""
    source: str = ""

    @property
    def target(self) -> str:
        return self.placement.target

    @property
    def annotation_ids(self) -> tuple[str, ...]:
        """``ccf_annotations`` as CURIEs (``UBERON:0002084``, ``FMA:7264``)."""
        return tuple(iri_to_curie(iri) for iri in self.ccf_annotations)


def _where(source: str, block_id: str) -> str:
    return f"{source}: registration {block_id}" if block_id else source


def _number(obj: Mapping[str, Any], key: str, where: str) -> float:
    value = obj.get(key)
    if value is None:  # absent or null: the RUI writes every component, and the HRA reads each
        raise InputFormatError(f"{where}: '{key}' is missing; a RUI registration needs it")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InputFormatError(f"{where}: '{key}' must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise InputFormatError(f"{where}: '{key}' must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InputFormatError(f"{where}: '{key}' must be finite, got {value!r}")
    return number


def _factor(obj: Mapping[str, Any], key: str, table: Mapping[str, float], default: str, where: str) -> float:
    unit = str(obj.get(key) or default).lower().rstrip("s")
    if unit not in table:
        raise InputFormatError(f"{where}: {key} '{obj.get(key)}' is not one of {', '.join(sorted(table))}")
    return table[unit]


def _triple(obj: Mapping[str, Any], stem: str, where: str, factor: float) -> Triple:
    x, y, z = (_number(obj, f"{axis}_{stem}", where) * factor for axis in "xyz")
    if not all(math.isfinite(v) for v in (x, y, z)):  # a huge value in cm, m or radians
        raise InputFormatError(f"{where}: x/y/z_{stem} ({x:g}, {y:g}, {z:g}) overflow; they must be finite")
    return (x, y, z)


def _check_reach(where: str, dimensions: Triple, placement: Placement) -> None:
    """Refuse a placement that carries the block out of any organ's frame: its corners must lie
    within ``MAX_REACH_MM`` of the organ's origin (a rotation keeps lengths, so |T| + |S ⊙ d/2|
    bounds them), which also keeps every later product of coordinates finite."""
    half = (s * d / 2.0 for s, d in zip(placement.scaling, dimensions, strict=True))
    reach = math.hypot(*placement.translation_mm) + math.hypot(*half)
    if not reach <= MAX_REACH_MM:
        raise InputFormatError(
            f"{where}: the placement puts the block up to {reach:.3g} mm from the organ's origin; "
            f"x/y/z_translation and x/y/z_scaling × the block's dimensions must keep it within "
            f"{MAX_REACH_MM:g} mm (a reference organ spans under 2 m)"
        )


def _placement(entity: Mapping[str, Any], where: str) -> Placement:
    raw = entity.get("placement")
    if isinstance(raw, list):  # the HRA takes the first placement of a list (ensureArray(…)[0])
        raw = raw[0] if raw else None
    if not isinstance(raw, Mapping):
        raise InputFormatError(f"{where}: no 'placement' object; is this a RUI registration?")
    target = raw.get("target")
    if not isinstance(target, str) or not target:
        raise InputFormatError(f"{where}: the placement has no 'target' reference organ")
    if str(raw.get("scaling_units") or "ratio").lower() != "ratio":
        raise InputFormatError(f"{where}: scaling_units '{raw.get('scaling_units')}' is not 'ratio'")
    order = str(raw.get("rotation_order") or "XYZ").upper()
    if sorted(order) != ["X", "Y", "Z"]:
        raise InputFormatError(f"{where}: rotation_order '{order}' must be a permutation of XYZ")
    scaling = _triple(raw, "scaling", where, 1.0)
    if min(scaling) <= 0.0:
        raise InputFormatError(
            f"{where}: x/y/z_scaling {scaling} must all be > 0 (a ratio: 0 collapses the block, "
            "a negative one mirrors it, which a RUI placement never does)"
        )
    return Placement(
        target=target,
        scaling=scaling,
        rotation_deg=_triple(
            raw, "rotation", where, _factor(raw, "rotation_units", _ANGLE_TO_DEG, "degree", where)
        ),
        rotation_order=order,
        translation_mm=_triple(
            raw,
            "translation",
            where,
            _factor(raw, "translation_units", _LENGTH_TO_MM, "millimeter", where),
        ),
        placement_date=str(raw.get("placement_date") or ""),
    )


def parse_registration(entity: Mapping[str, Any], *, source: str = "", sample_id: str = "") -> Registration:
    """One RUI ``SpatialEntity`` object (already parsed JSON) as a :class:`Registration`."""
    block_id = str(entity.get("@id") or "")
    where = _where(source, block_id)
    dimensions = _triple(
        entity,
        "dimension",
        where,
        _factor(entity, "dimension_units", _LENGTH_TO_MM, "millimeter", where),
    )
    if min(dimensions) <= 0:
        raise InputFormatError(f"{where}: block dimensions {dimensions} mm must all be positive")
    annotations = entity.get("ccf_annotations") or []
    if isinstance(annotations, str):
        annotations = [annotations]
    if not isinstance(annotations, list) or not all(isinstance(a, str) for a in annotations):
        raise InputFormatError(f"{where}: 'ccf_annotations' must be a list of IRIs")
    placement = _placement(entity, where)
    _check_reach(where, dimensions, placement)
    return Registration(
        id=block_id,
        dimensions_mm=dimensions,
        placement=placement,
        ccf_annotations=tuple(annotations),
        sample_id=sample_id,
        creation_date=str(entity.get("creation_date") or ""),
        source=source,
    )


def _entities(node: Any, source: str) -> Iterator[tuple[Mapping[str, Any], str]]:
    """(SpatialEntity, sample @id) pairs anywhere in a RUI JSON or JSON-LD document."""
    if isinstance(node, list):
        for item in node:
            yield from _entities(item, source)
    elif isinstance(node, Mapping):
        if "rui_location" in node:
            location = node["rui_location"]
            if isinstance(location, str):
                try:
                    location = json.loads(location)
                except json.JSONDecodeError as exc:
                    where = f"{source}: sample {node.get('@id', '?')}"
                    raise InputFormatError(f"{where}: rui_location is not valid JSON ({exc})") from None
            if isinstance(location, Mapping):
                yield location, str(node.get("@id") or "")
        elif node.get("@type") == "SpatialEntity" and "placement" in node:
            yield node, ""
        else:
            for value in node.values():
                if isinstance(value, list | Mapping):
                    yield from _entities(value, source)


def read_registrations(path: Path | str) -> tuple[Registration, ...]:
    """Every registration in a RUI JSON file or a ``rui_locations.jsonld`` collection."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark, as some Windows editors write
    except FileNotFoundError:
        raise SourceError(f"registration {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read registration {path}: {exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFormatError(
            f"{path} is not JSON ({exc}); expected a RUI registration (.json/.jsonld)"
        ) from None
    found = tuple(
        parse_registration(entity, source=str(path), sample_id=sample)
        for entity, sample in _entities(document, "")
    )
    if not found:
        raise InputFormatError(
            f"{path} holds no RUI registration (a SpatialEntity with a placement, or samples "
            "with rui_location)"
        )
    return found


def read_registration(path: Path | str, *, registration_id: str | None = None) -> Registration:
    """The one registration of a file, or the one whose block or sample ``@id`` is (or ends
    with) ``registration_id`` when the file holds several blocks."""
    found = read_registrations(path)
    if registration_id:
        wanted = registration_id
        found = tuple(
            r
            for r in found
            if wanted in (r.id, r.sample_id) or r.id.endswith(wanted) or r.sample_id.endswith(wanted)
        )
        if not found:
            raise UsageError(f"{path} has no registration or sample whose @id is or ends with '{wanted}'")
    blocks = {r.id: r for r in found}
    if len(blocks) > 1:
        examples = ", ".join(list(blocks)[:3])
        raise UsageError(
            f"{path} holds {len(blocks)} different blocks ({examples}, …); "
            "choose one by its block or sample @id (registration_id)"
        )
    return found[0]
