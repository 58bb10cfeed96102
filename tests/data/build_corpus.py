"""Build tests/data/pg15_regress_statements.json.gz from PostgreSQL 15's regression SQL.

Usage: python tests/data/build_corpus.py postgresql-15.18/src/test/regress/sql OUT.json.gz
"""
import gzip
import json
import pathlib
import re
import sys

from pglast import parser

src = pathlib.Path(sys.argv[1])
out = []
for f in sorted(src.glob("*.sql")):
    text = f.read_text(errors="replace")
    # psql meta-commands (\set, \gset, \d ...) end a statement or stand alone: drop the lines
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("\\")]
    text = "\n".join(lines)
    try:
        pieces = parser.split(text, with_parser=False)
    except Exception:
        continue
    for p in pieces:
        p = p.strip()
        if not p or len(p) > 20000 or re.search(r"(?<!:):'?[A-Za-z_]", p):  # psql variables
            continue
        try:
            if len(parser.parse_sql_json(p)) and len(__import__("json").loads(parser.parse_sql_json(p))["stmts"]) == 1:
                out.append([f.stem, p])
        except Exception:
            continue
print(len(out), sum(len(p) for _, p in out))
with gzip.open(sys.argv[2], "wt", encoding="utf-8") as g:
    json.dump(out, g, separators=(",", ":"))
