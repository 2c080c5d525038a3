"""Record what cellxgene-schema 7.1.2 says about each mutant (run once, offline, in a venv with
``pip install cellxgene-schema==7.1.2``; its ontologies ship in cellxgene-ontology-guide).

    python record_verdicts.py MUTANT_DIR verdicts.json

One Validator for all mutants, so the ontologies load once. The JSON maps each mutant's name to
its verdict (``valid``) and the validator's errors and warnings, without their prefixes (less
the warnings the fixture itself gives nearly every mutant: see ``_NOISE``).
"""

from __future__ import annotations

import json
import logging
import sys
from importlib.metadata import version
from pathlib import Path

from cellxgene_schema.validate import Validator

# warnings nearly every mutant gets from the fixture itself, left out to keep the record small
_NOISE = (
    "with zero observations",
    "Features SHOULD NOT be filtered",
    "Validation of raw layer was not performed",
)


def main(argv: list[str]) -> None:
    mutants, out = Path(argv[1]), Path(argv[2])
    logging.disable(logging.WARNING)
    verdicts = {}
    for path in sorted(mutants.glob("*.h5ad")):
        validator = Validator()
        valid = validator.validate_adata(str(path))
        errors = [e.removeprefix("ERROR: ") for e in validator.errors]
        warned = [w.removeprefix("WARNING: ") for w in validator.warnings]
        warned = [w for w in warned if not any(n in w for n in _NOISE)]
        verdicts[path.stem] = {"valid": bool(valid), "errors": errors, "warnings": warned}
        print(f"{path.stem}: {'valid' if valid else 'invalid'} {errors[:2]}", flush=True)
    record = {
        "validator": f"cellxgene-schema {version('cellxgene-schema')}",
        "ontology_guide": f"cellxgene-ontology-guide {version('cellxgene-ontology-guide')}",
        "verdicts": verdicts,
    }
    out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv)
