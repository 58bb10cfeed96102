"""Metadata pins, attacked: object text (defaults, CHECKs, index predicates and expressions,
trigger arguments and WHEN, RLS policy expressions, comments, statistics expressions,
publication row filters, domain and argument defaults...) is readable only for catalog
rows pinned to a relation the grant names, computed where the pin has already filtered
(the SELECT list, ORDER BY, GROUP BY/HAVING of a level that is no FROM-subquery, CTE or
view body). Everything else is refused with 42501; the server is the judge.

Grant: ``read:public.mp_orders write:public.mp_orders``. The schema owner (``pgwitness``,
the proxy's upstream login) plants one distinct ``mp-...`` marker per place object text
can live, on ``secret.mp_vault`` (and a domain, a function, a partitioned table, an enum),
on ``secret.mp_orders`` (a twin sharing the granted table's name), on two ungranted
neighbours in ``public`` (``mp9orders``, which ``LIKE 'mp_orders'`` matches, and
``"public.mp_orders"``, a name that looks qualified), and ``mp-ok-...`` markers on the
granted ``public.mp_orders``, which psql's ``\\d``/``\\d+`` and SQLAlchemy's reflection must
still show.

Each attack is sent over the simple protocol, the extended protocol (unnamed) and as a
named prepared statement by a raw client (every byte the proxy sent is looked at, errors'
DETAILs included); none may hold any secret marker (as text, bytea hex or a node tree's
byte list) and each must be refused with 42501. ``test_each_attack_reads_a_marker_directly``
runs the same statements as the upstream login itself: each one marked ``direct`` does
show a marker there, so it can fail; the few marked ``direct=False`` are shapes the design
refuses though this planted database does not make them leak (the planner evaluates the
pin first today), kept because nothing guarantees it will tomorrow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support.planted import assert_denied, assert_no_leak, fill, shows
from tests.support.proxies import issue as grant_issue
from tests.support.rawpg import SYNC, RawClient, bind, parse

pytestmark = pytest.mark.timeout(240)

AGENT = "mp-bot"
SCOPES = "read:public.mp_orders write:public.mp_orders"

# --- the planted markers ------------------------------------------------------------------

M = {  # outside the grant: must never come back through the proxy
    "default": "mp-default-4a71",
    "generated": "mp-generated-4a72",
    "missing": "mp-missing-4a73",
    "check": "mp-check-5b10",
    "indexpred": "mp-indexpred-6c21",
    "indexpr": "mp-indexpr-6c22",
    "tgargs": "mp-tgargs-7d30",
    "tgqual": "mp-tgqual-7d31",
    "policy": "mp-policy-8e40",
    "withcheck": "mp-withcheck-8e41",
    "comment": "mp-comment-9f50",
    "colcomment": "mp-colcomment-9f51",
    "stxexpr": "mp-stxexpr-a061",
    "pubfilter": "mp-pubfilter-b172",
    "domdefault": "mp-domdefault-c283",
    "domcheck": "mp-domcheck-c284",
    "argdefault": "mp-argdefault-d394",
    "fncomment": "mp-fncomment-d395",
    "partkey": "mp-partkey-e4a5",
    "partbound": "mp-partbound-e4a6",
    "enumlabel": "mp-enumlabel-f5b7",
    "refcheck": "mp-refcheck-06c8",
    "twin_default": "mp-twin-default-17d9",
    "twin_tgargs": "mp-twin-tgargs-17da",
    "twin_indexpred": "mp-twin-indexpred-17db",
    "twin_policy": "mp-twin-policy-17dc",
    "twin_comment": "mp-twin-comment-17dd",
    "wild_default": "mp-wild-default-28ea",
    "dotted_default": "mp-dotted-default-39fb",
}
SECRETS = list(M.values())
OK = {  # on the granted table: psql and drivers must keep showing these
    "default": "mp-ok-default",
    "check": "mp-ok-check",
    "indexpred": "mp-ok-indexpred",
    "tgargs": "mp-ok-tgargs",
    "policy": "mp-ok-policy",
    "comment": "mp-ok-comment",
    "colcomment": "mp-ok-colcomment",
    "pubfilter": "mp-ok-pubfilter",
}

SETUP = f"""
SET ROLE pgwitness;
CREATE FUNCTION public.mp_trg() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TABLE secret.mp_vault (
    k int PRIMARY KEY,
    secret text DEFAULT '{M["default"]}',
    gen text GENERATED ALWAYS AS (secret || '{M["generated"]}') STORED,
    CONSTRAINT mp_vault_chk CHECK (secret <> '{M["check"]}'));
INSERT INTO secret.mp_vault (k, secret) VALUES (1, 'x');
ALTER TABLE secret.mp_vault ADD COLUMN extra text DEFAULT '{M["missing"]}';
ALTER TABLE secret.mp_vault ALTER COLUMN extra DROP DEFAULT;  -- attmissingval stays
CREATE INDEX mp_vault_pred ON secret.mp_vault (k) WHERE secret <> '{M["indexpred"]}';
CREATE INDEX mp_vault_expr ON secret.mp_vault ((secret || '{M["indexpr"]}'));
CREATE TRIGGER mp_vault_trg BEFORE UPDATE ON secret.mp_vault FOR EACH ROW
    WHEN (NEW.secret <> '{M["tgqual"]}') EXECUTE FUNCTION public.mp_trg('{M["tgargs"]}');
CREATE POLICY mp_vault_pol ON secret.mp_vault USING (secret <> '{M["policy"]}')
    WITH CHECK (secret <> '{M["withcheck"]}');
COMMENT ON TABLE secret.mp_vault IS '{M["comment"]}';
COMMENT ON COLUMN secret.mp_vault.secret IS '{M["colcomment"]}';
CREATE STATISTICS secret.mp_vault_stx ON (secret || '{M["stxexpr"]}'), k FROM secret.mp_vault;
CREATE PUBLICATION mp_pub FOR TABLE secret.mp_vault WHERE (secret <> '{M["pubfilter"]}')
    WITH (publish = 'insert');
CREATE DOMAIN secret.mp_dom AS text DEFAULT '{M["domdefault"]}'
    CHECK (VALUE <> '{M["domcheck"]}');
CREATE FUNCTION secret.mp_argdef(a text DEFAULT '{M["argdefault"]}') RETURNS int
    LANGUAGE sql AS $$SELECT 1$$;
COMMENT ON FUNCTION secret.mp_argdef(text) IS '{M["fncomment"]}';
CREATE TABLE secret.mp_parted (v text) PARTITION BY LIST ((v || '{M["partkey"]}'));
CREATE TABLE secret.mp_part PARTITION OF secret.mp_parted FOR VALUES IN ('{M["partbound"]}');
CREATE TYPE secret.mp_enum AS ENUM ('{M["enumlabel"]}');

CREATE TABLE public.mp_orders (
    id int PRIMARY KEY,
    vault_k int REFERENCES secret.mp_vault (k),
    dom secret.mp_dom,
    note text DEFAULT '{OK["default"]}' CONSTRAINT mp_orders_chk CHECK (note <> '{OK["check"]}'));
INSERT INTO public.mp_orders (id, note) VALUES (1, 'granted-row');
CREATE INDEX mp_orders_pred ON public.mp_orders (id) WHERE note <> '{OK["indexpred"]}';
CREATE TRIGGER mp_orders_trg BEFORE UPDATE ON public.mp_orders FOR EACH ROW
    EXECUTE FUNCTION public.mp_trg('{OK["tgargs"]}');
CREATE POLICY mp_orders_pol ON public.mp_orders USING (note <> '{OK["policy"]}');
COMMENT ON TABLE public.mp_orders IS '{OK["comment"]}';
COMMENT ON COLUMN public.mp_orders.note IS '{OK["colcomment"]}';
CREATE PUBLICATION mp_ok_pub FOR TABLE public.mp_orders WHERE (note <> '{OK["pubfilter"]}')
    WITH (publish = 'insert');

CREATE TABLE secret.mp_orders (id int, note text DEFAULT '{M["twin_default"]}');
CREATE TRIGGER mp_twin_trg BEFORE UPDATE ON secret.mp_orders FOR EACH ROW
    EXECUTE FUNCTION public.mp_trg('{M["twin_tgargs"]}');
CREATE INDEX mp_twin_pred ON secret.mp_orders (id) WHERE note <> '{M["twin_indexpred"]}';
CREATE POLICY mp_twin_pol ON secret.mp_orders USING (note <> '{M["twin_policy"]}');
COMMENT ON TABLE secret.mp_orders IS '{M["twin_comment"]}';
CREATE TABLE public.mp9orders (id int, note text DEFAULT '{M["wild_default"]}');
CREATE TABLE public."public.mp_orders" (note text DEFAULT '{M["dotted_default"]}');
CREATE TABLE secret.mp_refs (order_id int REFERENCES public.mp_orders (id),
    tag text CONSTRAINT mp_refs_chk CHECK (tag <> '{M["refcheck"]}'));
RESET ROLE;
"""
TEARDOWN = """
DROP PUBLICATION IF EXISTS mp_pub, mp_ok_pub;
DROP TABLE IF EXISTS secret.mp_refs, public.mp_orders, secret.mp_orders, public.mp9orders,
    public."public.mp_orders", secret.mp_vault, secret.mp_parted;
DROP FUNCTION IF EXISTS public.mp_trg(), secret.mp_argdef(text);
DROP DOMAIN IF EXISTS secret.mp_dom;
DROP TYPE IF EXISTS secret.mp_enum;
"""

# The OIDs the probes name: <<G>> in a probe is the granted table's, and so on.
OID_QUERY = """
SELECT 'G=' || 'public.mp_orders'::regclass::oid
UNION ALL SELECT 'G_PRED=' || 'public.mp_orders_pred'::regclass::oid
UNION ALL SELECT 'S=' || 'secret.mp_vault'::regclass::oid
UNION ALL SELECT 'TWIN=' || 'secret.mp_orders'::regclass::oid
UNION ALL SELECT 'WILD=' || 'public.mp9orders'::regclass::oid
UNION ALL SELECT 'DOTTED=' || 'public."public.mp_orders"'::regclass::oid
UNION ALL SELECT 'REFS=' || 'secret.mp_refs'::regclass::oid
UNION ALL SELECT 'S_PRED=' || 'secret.mp_vault_pred'::regclass::oid
UNION ALL SELECT 'S_EXPR=' || 'secret.mp_vault_expr'::regclass::oid
UNION ALL SELECT 'S_PARTED=' || 'secret.mp_parted'::regclass::oid
UNION ALL SELECT 'S_PART=' || 'secret.mp_part'::regclass::oid
UNION ALL SELECT 'S_CHK=' || oid FROM pg_constraint WHERE conname = 'mp_vault_chk'
UNION ALL SELECT 'S_DOMCHK=' || oid FROM pg_constraint
    WHERE contypid = 'secret.mp_dom'::regtype
UNION ALL SELECT 'S_DOM=' || 'secret.mp_dom'::regtype::oid
UNION ALL SELECT 'S_TRG=' || oid FROM pg_trigger WHERE tgname = 'mp_vault_trg'
UNION ALL SELECT 'S_STX=' || oid FROM pg_statistic_ext WHERE stxname = 'mp_vault_stx'
UNION ALL SELECT 'S_FN=' || 'secret.mp_argdef(text)'::regprocedure::oid;
"""


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "mpins", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        planted.planted_oids(pg, handle, OID_QUERY)
        yield handle



@dataclass(frozen=True)
class Attack:
    sql: str
    keys: tuple[str, ...]  # the markers (M) the statement reaches when run directly
    direct: bool = True  # False: a shape the design refuses that does not leak here today
    before: tuple[str, ...] = ()  # sent first in the same session (simple protocol)
    after: tuple[str, ...] = ()


def A(sql: str, *keys: str, direct: bool = True, before=(), after=(), id: str | None = None):
    attack = Attack(sql, keys, direct, tuple(before), tuple(after))
    return pytest.param(attack, id=id or f"{keys[0] if keys else 'shape'}:{' '.join(sql.split())}")


AD = "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef"  # the simplest object text read


def boom(expr: str) -> str:
    """A condition whose error quotes ``expr`` when it holds a secret marker (text not
    naming one becomes '0' first): the attacker aims the cast at the rows they want."""
    return f"regexp_replace({expr}, '^(?!.*mp-(?!ok-)).*$', '0')::int > 0"


# ==========================================================================================
# The attacks
# ==========================================================================================

PIN_SHAPES = [  # the pin is missing, OR'd, negated, to the wrong relation, or not a pin
    A(f"{AD} WHERE adrelid = <<G>> OR adrelid = <<S>>", "default"),
    A(f"{AD} WHERE (adrelid = <<G>> AND adnum > 0) OR adrelid = <<S>>", "default"),
    A(f"{AD} WHERE adrelid = <<G>> OR true", "default"),
    A(f"{AD} WHERE adrelid IN (<<G>>, <<S>>)", "default"),
    A(f"{AD} WHERE adrelid = ANY ('{{<<G>>,<<S>>}}'::oid[])", "default"),
    A(f"{AD} WHERE adrelid = <<S>>", "default"),
    A(f"{AD} WHERE adrelid = '<<S>>'", "default"),
    A(f"{AD} WHERE adrelid = '+<<S>>'", "default"),
    A(f"{AD} WHERE adrelid = ' <<S>>'", "default"),
    A(f"{AD} WHERE adrelid = <<S>>::oid", "default"),
    A(f"{AD} WHERE adrelid = '<<S>>'::regclass", "default"),
    A(f"{AD} WHERE adrelid = 'secret.mp_vault'::regclass", "default"),
    A(f'{AD} WHERE adrelid = \'"secret"."mp_vault"\'::regclass', "default"),
    A(f"{AD} WHERE adrelid = 'SECRET.MP_VAULT'::regclass", "default"),
    A(f"{AD} WHERE adrelid = 'secret.mp_vault'::regclass::oid", "default"),
    A(f"{AD} WHERE adrelid = E'secret.mp\\x5fvault'::regclass", "default"),
    A(f"{AD} WHERE adrelid = U&'secret.mp\\005fvault'::regclass", "default"),
    A(f"{AD} WHERE adrelid = 'secret.mp_orders'::regclass", "twin_default"),
    A(f"{AD} WHERE adrelid = '\"public.mp_orders\"'::regclass", "dotted_default"),
    A(f"{AD} WHERE adrelid = 'public.\"public.mp_orders\"'::regclass", "dotted_default"),
    A(f"{AD} WHERE adrelid = 'public.mp9orders'::regclass", "wild_default"),
    A(f"{AD} WHERE adrelid = <<G>> + (<<S>> - <<G>>)", "default"),
    A(f"{AD} WHERE adrelid = (SELECT <<S>>::oid)", "default"),
    A(f"{AD} WHERE adrelid = (SELECT <<G>>::oid)", direct=False),
    A(f"{AD} WHERE adrelid = to_regclass('secret.mp_vault')", "default"),
    A(f"{AD} WHERE NOT (adrelid = <<G>>)", "default"),
    A(f"{AD} WHERE NOT (adrelid <> <<G>>)", direct=False),
    A(f"{AD} WHERE (adrelid = <<G>>) IS NOT TRUE", "default"),
    A(f"{AD} WHERE (adrelid = <<G>>) = false", "default"),
    A(f"{AD} WHERE CASE WHEN adrelid = <<G>> THEN true ELSE true END", "default"),
    A(f"{AD} WHERE CASE WHEN adrelid = <<G>> THEN true END", direct=False),
    A(f"{AD} WHERE COALESCE(adrelid = <<G>>, true) OR adnum > 0", "default"),
    A(f"{AD} WHERE adrelid <> <<G>>", "default"),
    A(f"{AD} WHERE adrelid <= <<G>>", "default"),
    A(f"{AD} WHERE adrelid::text LIKE '%'", "default"),
    A(f"{AD} WHERE adrelid::text = '<<S>>'", "default"),
    A(f"{AD} WHERE adrelid = <<G>> IS NOT FALSE OR adnum > 0", "default"),
    A(f"{AD} GROUP BY adbin, adrelid HAVING max(adrelid) = <<S>>", "default"),
    A(f"{AD} LIMIT 100", "default"),
    # a pin on a column that is not the catalog's owning-relation key
    A("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contypid = <<S_DOM>>", "domcheck"),
    A("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE oid = <<S_CHK>>", "check"),
    A(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgfoid = 'public.mp_trg'::regproc",
        "tgargs",
        "twin_tgargs",
    ),
    A("SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE oid = <<S_TRG>>", "tgargs"),
    A(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indexrelid = <<S_PRED>>",
        "indexpred",
    ),
    A(
        "SELECT pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polname = 'mp_vault_pol'",
        "policy",
    ),
    A("SELECT description FROM pg_description WHERE objoid = <<S_FN>>", "fncomment"),
    A(
        "SELECT description FROM pg_description WHERE objoid = <<S_DOMCHK>> OR classoid = "
        "'pg_class'::regclass",
        "comment",
    ),
    # foreign keys' definitions hold no literals (psql's "Referenced by" shows those of
    # other tables): a contype = 'f' that does not hold for every row read is no exemption
    A(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'f' OR contype = 'c'",
        "check",
    ),
    A("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype IN ('f', 'c')", "check"),
    A("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype <> 'p'", "check"),
    A(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE NOT contype <> 'f' OR true",
        "check",
    ),
    A(
        "SELECT pg_get_constraintdef(x.oid) FROM pg_constraint r, pg_constraint x "
        "WHERE r.contype = 'f'",
        "check",
    ),
    A(
        "SELECT pg_get_constraintdef(r.oid), pg_get_expr(r.conbin, r.conrelid) FROM pg_constraint r "
        "WHERE r.contype = 'f' OR r.conrelid = <<S>>",
        "check",
    ),
    A("SELECT conbin::text FROM pg_constraint WHERE contype = 'f' OR conrelid = <<S>>", "check"),
    A(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c LEFT JOIN pg_class k "
        "ON k.oid = c.conrelid AND c.contype = 'f'",
        "check",
    ),
    # pins through another catalog: by name only (the twin shares it), to the secret schema,
    # a cross join, a broken or OR'd chain
    A(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_class c "
        "ON c.oid = d.adrelid WHERE c.relname = 'mp_orders'",
        "twin_default",
    ),
    A(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_class c "
        "ON c.oid = d.adrelid WHERE c.relname = 'mp_orders' "
        "AND c.relnamespace = 'secret'::regnamespace",
        "twin_default",
    ),
    A(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_class c "
        "ON c.oid = d.adrelid WHERE c.relnamespace = 'secret'::regnamespace",
        "default",
    ),
    A(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_class c ON c.oid = <<G>>",
        "default",
    ),
    A(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d, pg_attribute a "
        "WHERE d.adrelid >= a.attrelid AND a.attrelid = 'pg_class'::regclass",
        "default",
    ),
    A(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d, pg_attribute a "
        "WHERE d.adrelid = a.attrelid AND (a.attrelid = <<G>> OR a.attrelid = <<S>>)",
        "default",
    ),
    A(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d, pg_attribute a "
        "WHERE d.adrelid = a.attrelid AND a.attnum = d.adnum AND a.attrelid = <<TWIN>>",
        "twin_default",
    ),
    A(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d, pg_attribute a "
        "WHERE d.adrelid = a.attrelid OR a.attrelid = <<G>>",
        "default",
    ),
    # a pinned row's column naming another relation, handed to a deparser
    A(
        "SELECT obj_description(c.confrelid, 'pg_class') FROM pg_constraint c "
        "WHERE c.conrelid = <<G>> AND c.contype = 'f'",
        "comment",
    ),
    A(
        "SELECT col_description(c.confrelid, 2) FROM pg_constraint c "
        "WHERE c.conrelid = <<G>> AND c.contype = 'f'",
        "colcomment",
    ),
    A(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_constraint c, pg_attrdef d "
        "WHERE c.conrelid = <<G>> AND c.contype = 'f' AND d.adrelid = c.confrelid",
        "default",
    ),
    A(
        "SELECT t.typdefault FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = <<G>> AND a.attname = 'dom'",
        "domdefault",
    ),
    A(
        "SELECT pg_get_constraintdef(k.oid) FROM pg_attribute a JOIN pg_constraint k "
        "ON k.contypid = a.atttypid WHERE a.attrelid = <<G>> AND a.attname = 'dom'",
        "domcheck",
    ),
    A("SELECT pg_get_expr(d.adbin, <<G>>) FROM pg_attrdef d WHERE d.adrelid = <<S>>", "default"),
    A(
        "SELECT pg_get_expr(x.adbin, d.adrelid) FROM pg_attrdef d, pg_attrdef x "
        "WHERE d.adrelid = <<G>>",
        "default",
    ),
    A(
        "SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t, pg_class c WHERE c.oid = <<G>>",
        "tgargs",
    ),
    A(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid IN "
        "(SELECT conrelid FROM pg_constraint WHERE confrelid = <<G>>)",
        "refcheck",
    ),
    A(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid IN "
        "(SELECT pg_catalog.pg_partition_ancestors('<<S>>') UNION ALL VALUES ('<<S>>'::regclass))",
        "check",
    ),
]

TEXT_OUTSIDE_THE_SELECT_LIST = [  # object text in WHERE / ON / FROM functions
    A(
        "SELECT 1 FROM pg_attrdef d, pg_attrdef x WHERE d.adrelid = <<G>> "
        f"AND {boom('pg_get_expr(x.adbin, x.adrelid)')}",
        "default",
    ),
    A(
        "SELECT d.adnum FROM pg_attrdef d JOIN pg_attrdef x "
        f"ON {boom('pg_get_expr(x.adbin, x.adrelid)')} WHERE d.adrelid = <<G>>",
        "default",
    ),
    A(
        "SELECT 1 FROM pg_attrdef WHERE adrelid = <<S>> AND pg_get_expr(adbin, adrelid)::int > 0",
        "default",
    ),
    A(
        "SELECT 1 FROM pg_attrdef WHERE adrelid = <<G>> AND pg_get_expr(adbin, adrelid)::int > 0",
        direct=False,
    ),
    A(
        "SELECT count(*) FROM pg_attrdef WHERE adrelid = <<G>> "
        "AND pg_get_expr(adbin, adrelid) LIKE '%mp-%'",
        direct=False,
    ),
    A(
        "SELECT 1 FROM pg_class c JOIN pg_attrdef d ON d.adrelid = c.oid "
        "AND pg_get_expr(d.adbin, d.adrelid)::int > 0 WHERE c.oid = <<G>>",
        direct=False,
    ),
    A(f"SELECT 1 FROM pg_description WHERE objoid = <<G>> OR {boom('description')}", "comment"),
    A(
        "SELECT 1 FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'mp_orders' "
        f"AND {boom('indexdef')}",
        "indexpred",
        "indexpr",
        "twin_indexpred",
    ),
    A(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = 'public' "
        f"AND table_name = 'mp_orders' AND {boom('column_default')}",
        direct=False,
    ),
    A(
        "SELECT 1 FROM pg_policies WHERE schemaname = 'public' AND tablename = 'mp_orders' "
        f"AND {boom('qual')}",
        "policy",
        "twin_policy",
    ),
    A(
        "SELECT 1 FROM information_schema.triggers WHERE event_object_schema = 'public' "
        f"AND event_object_table = 'mp_orders' AND {boom('action_statement')}",
        direct=False,
    ),
    A(
        "SELECT t FROM pg_attrdef d, pg_attrdef x, pg_get_expr(x.adbin, x.adrelid) t "
        "WHERE d.adrelid = <<G>>",
        "default",
    ),
    A(
        "SELECT t FROM pg_attrdef d, regexp_split_to_table(pg_get_expr(d.adbin, d.adrelid), ',') t "
        "WHERE d.adrelid = <<S>>",
        "default",
    ),
    A(
        "SELECT t FROM pg_attrdef d, pg_get_expr(d.adbin, d.adrelid) t WHERE d.adrelid = <<G>>",
        direct=False,
    ),
    A("SELECT * FROM ROWS FROM (pg_get_indexdef(<<S_PRED>>))", "indexpred"),
    A("SELECT * FROM unnest(pg_get_statisticsobjdef_expressions(<<S_STX>>))", "stxexpr"),
    A(
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'secret'::regnamespace AND "
        f"{boom('(SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d WHERE d.adrelid = c.oid AND d.adnum = 2)')}",
        "default",
        "twin_default",
    ),
    A(
        "SELECT c.relname FROM pg_class c WHERE c.oid = <<S>> AND "
        "(SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d WHERE d.adrelid = c.oid "
        "LIMIT 1)::int > 0",
        "default",
    ),
    A(
        "SELECT c.relname FROM pg_class c WHERE c.oid = <<G>> AND "
        "(SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d WHERE d.adrelid = c.oid "
        "LIMIT 1) IS NOT NULL",
        direct=False,
    ),
    A(
        "SELECT c.relname FROM pg_class c WHERE c.oid = <<G>> AND EXISTS "
        f"(SELECT 1 FROM pg_attrdef d WHERE {boom('pg_get_expr(d.adbin, d.adrelid)')})",
        "default",
    ),
]

WRAPPERS = [  # CTE, FROM-subquery, LATERAL, UNION, views, correlated subqueries
    A(
        "WITH s AS (SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' "
        f"AND tablename = 'mp_orders') SELECT 1 FROM s WHERE {boom('indexdef')}",
        "indexpred",
        "indexpr",
        "twin_indexpred",
    ),
    A(
        "SELECT 1 FROM (SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' "
        f"AND tablename = 'mp_orders') s WHERE {boom('s.indexdef')}",
        "indexpred",
        "indexpr",
        "twin_indexpred",
    ),
    A(
        "SELECT 1 FROM (SELECT column_default FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = 'mp_orders') s "
        f"WHERE {boom('s.column_default')}",
        direct=False,
    ),
    A(
        "WITH s AS (SELECT pg_get_expr(d.adbin, d.adrelid) t FROM pg_attrdef d "
        "JOIN pg_class c ON c.oid = d.adrelid WHERE c.relname = 'mp_orders' "
        f"AND c.relnamespace = 'public'::regnamespace) SELECT 1 FROM s WHERE {boom('t')}",
        "default",
        "twin_default",
        "wild_default",
        "dotted_default",
    ),
    A(
        "WITH s AS (SELECT pg_get_expr(adbin, adrelid) t FROM pg_attrdef WHERE adrelid = <<G>>) "
        "SELECT t FROM s",
        direct=False,
    ),
    A(
        "WITH s AS MATERIALIZED (SELECT pg_get_expr(adbin, adrelid) t FROM pg_attrdef "
        "WHERE adrelid = <<G>>) SELECT t FROM s",
        direct=False,
    ),
    A(
        "WITH s AS (SELECT adbin, adrelid FROM pg_attrdef) SELECT pg_get_expr(adbin, adrelid) "
        "FROM s",
        "default",
    ),
    A(
        "WITH s AS (SELECT adbin, adrelid FROM pg_attrdef) SELECT pg_get_expr(adbin, adrelid) "
        "FROM s WHERE adrelid = <<G>>",
        direct=False,
    ),
    A(
        "SELECT t FROM (SELECT pg_get_expr(adbin, adrelid) t, adrelid FROM pg_attrdef) s "
        "WHERE s.adrelid = <<G>>",
        direct=False,
    ),
    A("SELECT t FROM (SELECT pg_get_expr(adbin, adrelid) t, adrelid FROM pg_attrdef) s", "default"),
    A(
        "SELECT pg_get_expr(s.adbin, s.adrelid) FROM (SELECT * FROM pg_attrdef) s "
        "WHERE s.adrelid = <<G>> OR s.adrelid = <<S>>",
        "default",
    ),
    A(
        "SELECT s.t FROM pg_class c, LATERAL (SELECT pg_get_expr(d.adbin, d.adrelid) t "
        "FROM pg_attrdef d WHERE d.adrelid = c.oid) s WHERE c.oid = <<S>>",
        "default",
    ),
    A(
        "SELECT s.t FROM pg_class c, LATERAL (SELECT pg_get_expr(d.adbin, d.adrelid) t "
        "FROM pg_attrdef d WHERE d.adrelid = c.oid) s "
        "WHERE c.relnamespace = 'secret'::regnamespace",
        "default",
    ),
    A(
        "SELECT s.t FROM pg_class c, LATERAL (SELECT pg_get_expr(d.adbin, d.adrelid) t "
        "FROM pg_attrdef d WHERE d.adrelid = c.oid OR d.adrelid = <<S>>) s WHERE c.oid = <<G>>",
        "default",
    ),
    A(
        "SELECT s.t FROM pg_class c, LATERAL (SELECT pg_get_expr(d.adbin, d.adrelid) t "
        "FROM pg_attrdef d WHERE d.adrelid = c.oid) s WHERE c.oid = <<G>>",
        direct=False,
    ),
    A(
        "SELECT s.t FROM pg_class c, LATERAL (SELECT pg_get_expr(d.adbin, d.adrelid) t "
        "FROM pg_attrdef d WHERE d.adrelid = c.oid) s WHERE c.oid = <<G>> AND s.t::int > 0",
        direct=False,
    ),
    A(f"{AD} WHERE adrelid = <<G>> UNION ALL {AD}", "default"),
    A(
        f"{AD} WHERE adrelid = <<G>> UNION SELECT description FROM pg_description "
        "WHERE objoid = <<S>>",
        "comment",
    ),
    A(
        f"{AD} WHERE adrelid = <<G>> EXCEPT SELECT ''::text WHERE false UNION ALL "
        "SELECT pg_get_expr(polqual, polrelid) FROM pg_policy",
        "policy",
    ),
    A(
        f"SELECT * FROM ({AD} WHERE adrelid = <<G>> UNION ALL {AD} WHERE adrelid = <<S>>) u",
        "default",
    ),
    A(
        "SELECT (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d "
        "WHERE d.adrelid = c.oid LIMIT 1) FROM pg_class c "
        "WHERE c.relnamespace = 'secret'::regnamespace",
        "default",
        "twin_default",
    ),
    A(
        "SELECT (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d "
        "WHERE d.adrelid = c.oid LIMIT 1) FROM pg_class c WHERE c.oid = <<G>> OR c.oid = <<S>>",
        "default",
    ),
    A(
        "SELECT (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d "
        "WHERE d.adrelid = c.oid OR d.adrelid = <<S>> LIMIT 1) FROM pg_class c "
        "WHERE c.oid = <<G>> AND c.relkind = 'x'",
        direct=False,
    ),
    A(
        "SELECT (SELECT string_agg(pg_get_expr(d.adbin, d.adrelid), ',') FROM pg_attrdef d "
        "WHERE d.adrelid = c.oid OR d.adrelid = <<S>>) FROM pg_class c WHERE c.oid = <<G>>",
        "default",
    ),
    A(
        "SELECT (SELECT string_agg(pg_get_expr(adbin, adrelid), ',') FROM pg_attrdef), relname "
        "FROM pg_class WHERE oid = <<G>>",
        "default",
    ),
    A(
        "SELECT (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d "
        "WHERE d.adrelid = c.oid LIMIT 1) FROM pg_class c "
        "WHERE c.relname = 'mp_orders' ORDER BY 1 NULLS LAST",
        "twin_default",
    ),
    A(
        "SELECT t FROM mp_v WHERE adrelid = <<G>> OR true",
        "default",
        before=[
            "CREATE TEMP VIEW mp_v AS SELECT pg_get_expr(adbin, adrelid) t, adrelid FROM pg_attrdef"
        ],
    ),
    A(
        f"SELECT 1 FROM mp_v2 WHERE {boom('indexdef')}",
        "indexpred",
        "indexpr",
        "twin_indexpred",
        before=[
            "CREATE TEMP VIEW mp_v2 AS SELECT indexdef FROM pg_indexes "
            "WHERE schemaname = 'public' AND tablename = 'mp_orders'"
        ],
    ),
]

WHOLE_ROWS_AND_COPY = [
    A("SELECT d FROM pg_attrdef d", "default"),
    A("SELECT d::text FROM pg_attrdef d WHERE d.adrelid = <<S>>", "default"),
    A("SELECT to_jsonb(d) FROM pg_attrdef d", "default"),
    A("SELECT to_jsonb(d) FROM pg_attrdef d WHERE d.adrelid = <<S>>", "default"),
    A("SELECT row_to_json(p) FROM pg_policy p", "policy"),
    A("SELECT (t).* FROM pg_trigger t", "tgargs"),
    A("SELECT ROW(t.*)::text FROM pg_trigger t", "tgargs"),
    A("SELECT jsonb_agg(c) FROM pg_constraint c WHERE c.conrelid <> <<G>>", "check"),
    A("SELECT array_agg(i)::text FROM pg_index i", "indexpred"),
    A("SELECT * FROM pg_description", "comment"),
    A("TABLE pg_description", "comment"),
    A("TABLE pg_catalog.pg_attrdef", "default"),
    A("SELECT * FROM pg_policies", "policy"),
    A("SELECT * FROM pg_indexes WHERE schemaname = 'secret'", "indexpred"),
    A("SELECT * FROM information_schema.columns WHERE table_schema = 'secret'", "default"),
    A("SELECT to_jsonb(x) FROM information_schema.check_constraints x", "check"),
    A("SELECT * FROM pg_attrdef d, pg_constraint c WHERE d.adrelid = <<G>>", "check"),
    A("SELECT d.*, x.* FROM pg_attrdef d, pg_attrdef x WHERE d.adrelid = <<G>>", "default"),
    A("SELECT s FROM (SELECT * FROM pg_attrdef) s", "default"),
    A("COPY pg_attrdef TO STDOUT", "default"),
    A("COPY pg_catalog.pg_description TO STDOUT", "comment"),
    A("COPY pg_trigger (tgargs) TO STDOUT", "tgargs"),
    A(f"COPY ({AD}) TO STDOUT", "default"),
    A("COPY (SELECT * FROM pg_policies) TO STDOUT", "policy"),
    A(
        "COPY (SELECT column_default FROM information_schema.columns "
        "WHERE table_name = 'mp_orders') TO STDOUT",
        "twin_default",
    ),
    A(f"COPY ({AD} WHERE adrelid = <<S>>) TO STDOUT", "default"),
]

OUTER_JOINS = [  # a pin in the ON of the preserved side filters nothing
    A(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d LEFT JOIN pg_class c "
        "ON c.oid = d.adrelid AND d.adrelid = <<G>>",
        "default",
    ),
    A(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_class c RIGHT JOIN pg_attrdef d "
        "ON c.oid = d.adrelid AND c.oid = <<G>>",
        "default",
    ),
    A(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_class c FULL JOIN pg_attrdef d "
        "ON d.adrelid = c.oid AND c.oid = <<G>>",
        "default",
    ),
    A(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_class c FULL JOIN pg_attrdef d "
        "ON d.adrelid = c.oid AND d.adrelid = <<G>>",
        "default",
    ),
    A(
        "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c LEFT JOIN pg_attrdef d "
        "ON d.adrelid = c.oid AND c.oid = <<G>>",
        "comment",
    ),
    A(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_class c LEFT JOIN pg_attrdef d "
        "ON d.adrelid = c.oid AND d.adrelid = <<G>> OR d.adrelid = <<S>>",
        "default",
    ),
    A(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d LEFT JOIN pg_attribute a "
        "ON a.attrelid = d.adrelid AND a.attrelid = <<G>> WHERE a.attrelid IS NULL",
        "default",
    ),
]

DEPARSERS = [  # called with a literal naming a secret object
    A("SELECT pg_get_indexdef(<<S_PRED>>)", "indexpred"),
    A("SELECT pg_get_indexdef('<<S_PRED>>')", "indexpred"),
    A("SELECT pg_catalog.pg_get_indexdef(<<S_PRED>>::oid)", "indexpred"),
    A("SELECT pg_get_indexdef('secret.mp_vault_pred'::regclass)", "indexpred"),
    A("SELECT pg_get_indexdef(<<S_EXPR>>, 0, true)", "indexpr"),
    A("SELECT pg_get_indexdef(<<S_EXPR>>, 1, true)", "indexpr"),
    A("SELECT pg_get_indexdef(<<G_PRED>> + (<<S_PRED>> - <<G_PRED>>))", "indexpred"),
    A("SELECT pg_get_constraintdef(<<S_CHK>>)", "check"),
    A("SELECT pg_get_constraintdef(<<S_CHK>>, true)", "check"),
    A("SELECT pg_get_constraintdef(<<S_DOMCHK>>)", "domcheck"),
    A("SELECT pg_get_triggerdef(<<S_TRG>>)", "tgargs"),
    A("SELECT pg_get_triggerdef(<<S_TRG>>, true)", "tgargs"),
    A("SELECT pg_get_statisticsobjdef(<<S_STX>>)", "stxexpr"),
    A("SELECT pg_get_statisticsobjdef_expressions(<<S_STX>>)", "stxexpr"),
    A("SELECT pg_get_statisticsobjdef_columns(<<S_STX>>)", "stxexpr"),
    A("SELECT pg_get_partkeydef(<<S_PARTED>>)", "partkey"),
    A("SELECT pg_get_partkeydef('secret.mp_parted'::regclass)", "partkey"),
    A("SELECT pg_get_partition_constraintdef(<<S_PART>>)", "partbound"),
    A("SELECT obj_description(<<S>>, 'pg_class')", "comment"),
    A("SELECT obj_description(<<S>>)", "comment"),
    A("SELECT obj_description('secret.mp_vault'::regclass, 'pg_class')", "comment"),
    A("SELECT obj_description('secret.mp_orders'::regclass, 'pg_class')", "twin_comment"),
    A("SELECT pg_catalog.obj_description(<<S>>::oid, 'pg_class'::name)", "comment"),
    A("SELECT col_description(<<S>>, 2)", "colcomment"),
    A("SELECT col_description('secret.mp_vault'::regclass, 2)", "colcomment"),
    A("SELECT col_description(<<G>> + (<<S>> - <<G>>), 2)", "colcomment"),
    A("SELECT obj_description(<<S_FN>>, 'pg_proc')", "fncomment"),
    A(
        "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c WHERE c.relname = 'mp_vault'",
        "comment",
    ),
    A(
        "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c WHERE c.relname = 'mp_orders'",
        "twin_comment",
    ),
    A(
        "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c "
        "WHERE c.relnamespace = 'secret'::regnamespace",
        "comment",
    ),
    A(
        "SELECT obj_description(oid, 'pg_class') FROM pg_class WHERE oid IN (<<G>>, <<TWIN>>)",
        "twin_comment",
    ),
    A(
        "SELECT pg_get_indexdef(c.oid) FROM pg_class c WHERE c.relname = 'mp_vault_pred'",
        "indexpred",
    ),
    A(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = <<TWIN>>",
        "twin_indexpred",
    ),
]

NAMES = [  # the views by name: the twin shares it, LIKE wildcards, quoted-looking names
    A(
        "SELECT column_default FROM information_schema.columns WHERE table_name = 'mp_orders'",
        "twin_default",
    ),
    A(
        "SELECT column_default FROM information_schema.columns WHERE table_schema = 'secret' "
        "AND table_name = 'mp_orders'",
        "twin_default",
    ),
    A(
        "SELECT column_default FROM information_schema.columns WHERE table_schema LIKE '%' "
        "AND table_name = 'mp_orders'",
        "twin_default",
    ),
    A(
        "SELECT column_default FROM information_schema.columns "
        "WHERE table_schema IN ('public', 'secret') AND table_name = 'mp_orders'",
        "twin_default",
    ),
    A(
        "SELECT column_default FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name LIKE 'mp_orders'",
        "wild_default",
    ),
    A(
        "SELECT column_default FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name LIKE '%'",
        "wild_default",
        "dotted_default",
    ),
    A(
        "SELECT column_default FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name LIKE 'mp%'",
        "wild_default",
    ),
    A(
        "SELECT column_default FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name ILIKE 'MP_ORDERS'",
        "wild_default",
    ),
    A(
        "SELECT column_default FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name SIMILAR TO 'mp_orders'",
        "wild_default",
    ),
    A(
        "SELECT column_default FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name ~ '^mp.orders$'",
        "wild_default",
    ),
    A(
        "SELECT column_default FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name = 'public.mp_orders'",
        "dotted_default",
    ),
    A(
        "SELECT column_default FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name = 'mp_orders' OR table_name = 'mp9orders'",
        "wild_default",
    ),
    A(
        "SELECT column_default FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name IN ('mp_orders', 'mp9orders')",
        "wild_default",
    ),
    A(
        "SELECT column_default FROM information_schema.columns "
        "WHERE table_schema || '.' || table_name = 'public.mp9orders'",
        "wild_default",
    ),
    A(
        "SELECT action_statement FROM information_schema.triggers "
        "WHERE event_object_table = 'mp_orders'",
        "twin_tgargs",
    ),
    A(
        "SELECT action_condition FROM information_schema.triggers "
        "WHERE event_object_table = 'mp_vault'",
        "tgqual",
    ),
    A("SELECT qual FROM pg_policies WHERE tablename = 'mp_orders'", "twin_policy"),
    A(
        "SELECT qual, with_check FROM pg_policies WHERE schemaname = 'secret' "
        "AND tablename = 'mp_vault'",
        "policy",
    ),
    A("SELECT indexdef FROM pg_indexes WHERE tablename = 'mp_orders'", "twin_indexpred"),
    A(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'secret' AND tablename = 'mp_vault'",
        "indexpred",
    ),
    A(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename LIKE 'mp%'",
        direct=False,
    ),
    A(
        "SELECT check_clause FROM information_schema.check_constraints "
        "WHERE constraint_schema = 'secret'",
        "check",
    ),
    A(
        "SELECT check_clause FROM information_schema.check_constraints "
        "WHERE constraint_name = 'mp_vault_chk'",
        "check",
    ),
    A(
        "SELECT generation_expression FROM information_schema.columns "
        "WHERE table_schema = 'secret' AND table_name = 'mp_vault'",
        "generated",
    ),
    A(
        "SELECT parameter_default FROM information_schema.parameters "
        "WHERE specific_schema = 'secret'",
        "argdefault",
    ),
    A(
        "SELECT domain_default FROM information_schema.domains WHERE domain_schema = 'secret'",
        "domdefault",
    ),
]

RAW_CATALOG_COLUMNS = [  # the listed columns themselves, node trees as text
    A("SELECT adbin::text FROM pg_attrdef WHERE adrelid = <<S>>", "default"),
    A("SELECT adbin FROM pg_attrdef", "default"),
    A(
        "SELECT attmissingval::text FROM pg_attribute WHERE attrelid = <<S>> AND atthasmissing",
        "missing",
    ),
    A("SELECT attmissingval FROM pg_attribute WHERE atthasmissing", "missing"),
    A("SELECT conbin::text FROM pg_constraint WHERE conrelid = <<S>>", "check"),
    A(
        "SELECT pg_get_expr(conbin, conrelid) FROM pg_constraint WHERE conrelid = <<REFS>>",
        "refcheck",
    ),
    A("SELECT indpred::text FROM pg_index WHERE indrelid = <<S>>", "indexpred"),
    A("SELECT indexprs::text FROM pg_index WHERE indrelid = <<S>>", "indexpr"),
    A("SELECT pg_get_expr(indpred, indrelid) FROM pg_index WHERE indrelid = <<S>>", "indexpred"),
    A("SELECT tgargs FROM pg_trigger WHERE tgrelid = <<S>>", "tgargs"),
    A("SELECT encode(tgargs, 'escape') FROM pg_trigger WHERE tgrelid = <<S>>", "tgargs"),
    A("SELECT tgqual::text FROM pg_trigger WHERE tgrelid = <<S>>", "tgqual"),
    A(
        "SELECT polqual::text, polwithcheck::text FROM pg_policy WHERE polrelid = <<S>>",
        "policy",
        "withcheck",
    ),
    A(
        "SELECT pg_get_expr(polwithcheck, polrelid) FROM pg_policy WHERE polrelid = <<S>>",
        "withcheck",
    ),
    A("SELECT prqual::text FROM pg_publication_rel", "pubfilter"),
    A(
        "SELECT pg_get_expr(prqual, prrelid) FROM pg_publication_rel WHERE prrelid = <<S>>",
        "pubfilter",
    ),
    A("SELECT description FROM pg_description WHERE objoid = <<S>>", "comment"),
    A("SELECT description FROM pg_description WHERE objoid = <<S>> AND objsubid = 2", "colcomment"),
    A("SELECT stxexprs::text FROM pg_statistic_ext WHERE stxrelid = <<S>>", "stxexpr"),
    A(
        "SELECT pg_get_statisticsobjdef(oid) FROM pg_statistic_ext WHERE stxrelid = <<S>>",
        "stxexpr",
    ),
    A("SELECT typdefault FROM pg_type WHERE typname = 'mp_dom'", "domdefault"),
    A("SELECT typdefaultbin::text FROM pg_type WHERE oid = <<S_DOM>>", "domdefault"),
    A("SELECT proargdefaults::text FROM pg_proc WHERE oid = <<S_FN>>", "argdefault"),
    A("SELECT pg_get_expr(proargdefaults, 0) FROM pg_proc WHERE oid = <<S_FN>>", "argdefault"),
]

SMUGGLING = [  # statements that carry object text somewhere else, or defer it
    A(
        "INSERT INTO public.mp_orders (id, note) SELECT 100 + objsubid, description FROM pg_description "
        "WHERE objoid = <<S>> RETURNING note",
        "comment",
    ),
    A(
        "UPDATE public.mp_orders SET note = (SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef "
        "WHERE adrelid = <<S>> LIMIT 1) WHERE id = 1 RETURNING note",
        "default",
    ),
    A(
        "SELECT id FROM public.mp_orders WHERE note = (SELECT description FROM pg_description "
        "WHERE objoid = <<S>> LIMIT 1)::int::text",
        "comment",
    ),
    A(
        "EXPLAIN ANALYZE SELECT pg_get_expr(adbin, adrelid)::int FROM pg_attrdef "
        "WHERE adrelid = <<S>>",
        "default",
    ),
    A("EXECUTE mp_q(<<S>>)", "default", before=[f"PREPARE mp_q(oid) AS {AD} WHERE adrelid = $1"]),
    A("FETCH ALL FROM mp_c", "default", before=[f"DECLARE mp_c CURSOR WITH HOLD FOR {AD}"]),
    A(
        "SELECT query_to_xml('SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef', true, false, '')",
        "default",
    ),
    A(
        "SELECT format('%s', (SELECT to_jsonb(p) FROM pg_policy p WHERE polrelid = <<S>>))",
        "policy",
    ),
]

BEYOND_THE_LIST = [  # object text in places the design's list does not name
    A("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = <<S_PART>>", "partbound"),
    A("SELECT relpartbound::text FROM pg_class WHERE relispartition", "partbound"),
    A("SELECT partexprs::text FROM pg_partitioned_table WHERE partrelid = <<S_PARTED>>", "partkey"),
    A("SELECT pg_get_expr(partexprs, partrelid) FROM pg_partitioned_table", "partkey"),
    A("SELECT rowfilter FROM pg_publication_tables WHERE pubname = 'mp_pub'", "pubfilter"),
    A("SELECT qual::text FROM pg_get_publication_tables('mp_pub')", "pubfilter"),
    A("SELECT pg_get_function_arguments(<<S_FN>>)", "argdefault"),
    A(
        "SELECT pg_get_function_arguments(oid) FROM pg_proc WHERE proname = 'mp_argdef'",
        "argdefault",
    ),
    A("SELECT enumlabel FROM pg_enum WHERE enumtypid = 'secret.mp_enum'::regtype", "enumlabel"),
    A("SELECT enum_range(NULL::secret.mp_enum)::text", "enumlabel"),
]

# psql 15's hidden queries for `\d public.mp_orders` and `\d+ public.mp_orders` (captured
# with ECHO_HIDDEN), with the relation's OID as <<REL>>; the keys of OK each must show.
PSQL_D = {
    "lookup": (
        """SELECT c.oid,
  n.nspname,
  c.relname
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname OPERATOR(pg_catalog.~) '^(mp_orders)$' COLLATE pg_catalog.default
  AND n.nspname OPERATOR(pg_catalog.~) '^(public)$' COLLATE pg_catalog.default
ORDER BY 2, 3;""",
        (),
    ),
    "relation": (
        """SELECT c.relchecks, c.relkind, c.relhasindex, c.relhasrules, c.relhastriggers, c.relrowsecurity, c.relforcerowsecurity, false AS relhasoids, c.relispartition, '', c.reltablespace, CASE WHEN c.reloftype = 0 THEN '' ELSE c.reloftype::pg_catalog.regtype::pg_catalog.text END, c.relpersistence, c.relreplident, am.amname
FROM pg_catalog.pg_class c
 LEFT JOIN pg_catalog.pg_class tc ON (c.reltoastrelid = tc.oid)
LEFT JOIN pg_catalog.pg_am am ON (c.relam = am.oid)
WHERE c.oid = '<<REL>>';""",
        (),
    ),
    "relation+": (
        """SELECT c.relchecks, c.relkind, c.relhasindex, c.relhasrules, c.relhastriggers, c.relrowsecurity, c.relforcerowsecurity, false AS relhasoids, c.relispartition, pg_catalog.array_to_string(c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x), ', ')
, c.reltablespace, CASE WHEN c.reloftype = 0 THEN '' ELSE c.reloftype::pg_catalog.regtype::pg_catalog.text END, c.relpersistence, c.relreplident, am.amname
FROM pg_catalog.pg_class c
 LEFT JOIN pg_catalog.pg_class tc ON (c.reltoastrelid = tc.oid)
LEFT JOIN pg_catalog.pg_am am ON (c.relam = am.oid)
WHERE c.oid = '<<REL>>';""",
        (),
    ),
    "columns": (
        """SELECT a.attname,
  pg_catalog.format_type(a.atttypid, a.atttypmod),
  (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true)
   FROM pg_catalog.pg_attrdef d
   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),
  a.attnotnull,
  (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t
   WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS attcollation,
  a.attidentity,
  a.attgenerated
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = '<<REL>>' AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;""",
        ("default",),
    ),
    "columns+": (
        """SELECT a.attname,
  pg_catalog.format_type(a.atttypid, a.atttypmod),
  (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true)
   FROM pg_catalog.pg_attrdef d
   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),
  a.attnotnull,
  (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t
   WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS attcollation,
  a.attidentity,
  a.attgenerated,
  a.attstorage,
  a.attcompression AS attcompression,
  CASE WHEN a.attstattarget=-1 THEN NULL ELSE a.attstattarget END AS attstattarget,
  pg_catalog.col_description(a.attrelid, a.attnum)
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = '<<REL>>' AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;""",
        ("default", "colcomment"),
    ),
    "indexes": (
        """SELECT c2.relname, i.indisprimary, i.indisunique, i.indisclustered, i.indisvalid, pg_catalog.pg_get_indexdef(i.indexrelid, 0, true),
  pg_catalog.pg_get_constraintdef(con.oid, true), contype, condeferrable, condeferred, i.indisreplident, c2.reltablespace
FROM pg_catalog.pg_class c, pg_catalog.pg_class c2, pg_catalog.pg_index i
  LEFT JOIN pg_catalog.pg_constraint con ON (conrelid = i.indrelid AND conindid = i.indexrelid AND contype IN ('p','u','x'))
WHERE c.oid = '<<REL>>' AND c.oid = i.indrelid AND i.indexrelid = c2.oid
ORDER BY i.indisprimary DESC, c2.relname;""",
        ("indexpred",),
    ),
    "checks": (
        """SELECT r.conname, pg_catalog.pg_get_constraintdef(r.oid, true)
FROM pg_catalog.pg_constraint r
WHERE r.conrelid = '<<REL>>' AND r.contype = 'c'
ORDER BY 1;""",
        ("check",),
    ),
    "foreign-keys": (
        """SELECT true as sametable, conname,
  pg_catalog.pg_get_constraintdef(r.oid, true) as condef,
  conrelid::pg_catalog.regclass AS ontable
FROM pg_catalog.pg_constraint r
WHERE r.conrelid = '<<REL>>' AND r.contype = 'f'
     AND conparentid = 0
ORDER BY conname""",
        (),
    ),
    "referenced-by": (
        """SELECT conname, conrelid::pg_catalog.regclass AS ontable,
       pg_catalog.pg_get_constraintdef(oid, true) AS condef
  FROM pg_catalog.pg_constraint c
 WHERE confrelid IN (SELECT pg_catalog.pg_partition_ancestors('<<REL>>')
                     UNION ALL VALUES ('<<REL>>'::pg_catalog.regclass))
       AND contype = 'f' AND conparentid = 0
ORDER BY conname;""",
        (),
    ),
    "policies": (
        """SELECT pol.polname, pol.polpermissive,
  CASE WHEN pol.polroles = '{0}' THEN NULL ELSE pg_catalog.array_to_string(array(select rolname from pg_catalog.pg_roles where oid = any (pol.polroles) order by 1),',') END,
  pg_catalog.pg_get_expr(pol.polqual, pol.polrelid),
  pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid),
  CASE pol.polcmd
    WHEN 'r' THEN 'SELECT'
    WHEN 'a' THEN 'INSERT'
    WHEN 'w' THEN 'UPDATE'
    WHEN 'd' THEN 'DELETE'
    END AS cmd
FROM pg_catalog.pg_policy pol
WHERE pol.polrelid = '<<REL>>' ORDER BY 1;""",
        ("policy",),
    ),
    "statistics": (
        """SELECT oid, stxrelid::pg_catalog.regclass, stxnamespace::pg_catalog.regnamespace::pg_catalog.text AS nsp, stxname,
pg_catalog.pg_get_statisticsobjdef_columns(oid) AS columns,
  'd' = any(stxkind) AS ndist_enabled,
  'f' = any(stxkind) AS deps_enabled,
  'm' = any(stxkind) AS mcv_enabled,
stxstattarget
FROM pg_catalog.pg_statistic_ext
WHERE stxrelid = '<<REL>>'
ORDER BY nsp, stxname;""",
        (),
    ),
    "publications": (
        """SELECT pubname
     , NULL
     , NULL
FROM pg_catalog.pg_publication p
     JOIN pg_catalog.pg_publication_namespace pn ON p.oid = pn.pnpubid
     JOIN pg_catalog.pg_class pc ON pc.relnamespace = pn.pnnspid
WHERE pc.oid ='<<REL>>' and pg_catalog.pg_relation_is_publishable('<<REL>>')
UNION
SELECT pubname
     , pg_get_expr(pr.prqual, c.oid)
     , (CASE WHEN pr.prattrs IS NOT NULL THEN
         (SELECT string_agg(attname, ', ')
           FROM pg_catalog.generate_series(0, pg_catalog.array_upper(pr.prattrs::pg_catalog.int2[], 1)) s,
                pg_catalog.pg_attribute
          WHERE attrelid = pr.prrelid AND attnum = prattrs[s])
        ELSE NULL END) FROM pg_catalog.pg_publication p
     JOIN pg_catalog.pg_publication_rel pr ON p.oid = pr.prpubid
     JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
WHERE pr.prrelid = '<<REL>>'
UNION
SELECT pubname
     , NULL
     , NULL
FROM pg_catalog.pg_publication p
WHERE p.puballtables AND pg_catalog.pg_relation_is_publishable('<<REL>>')
ORDER BY 1;""",
        ("pubfilter",),
    ),
    "triggers": (
        """SELECT t.tgname, pg_catalog.pg_get_triggerdef(t.oid, true), t.tgenabled, t.tgisinternal,
  CASE WHEN t.tgparentid != 0 THEN
    (SELECT u.tgrelid::pg_catalog.regclass
     FROM pg_catalog.pg_trigger AS u,
          pg_catalog.pg_partition_ancestors(t.tgrelid) WITH ORDINALITY AS a(relid, depth)
     WHERE u.tgname = t.tgname AND u.tgrelid = a.relid
           AND u.tgparentid = 0
     ORDER BY a.depth LIMIT 1)
  END AS parent
FROM pg_catalog.pg_trigger t
WHERE t.tgrelid = '<<REL>>' AND (NOT t.tgisinternal OR (t.tgisinternal AND t.tgenabled = 'D'))
ORDER BY 1;""",
        ("tgargs",),
    ),
    "inherits": (
        """SELECT c.oid::pg_catalog.regclass
FROM pg_catalog.pg_class c, pg_catalog.pg_inherits i
WHERE c.oid = i.inhparent AND i.inhrelid = '<<REL>>'
  AND c.relkind != 'p' AND c.relkind != 'I'
ORDER BY inhseqno;""",
        (),
    ),
    "children": (
        """SELECT c.oid::pg_catalog.regclass, c.relkind, inhdetachpending, pg_catalog.pg_get_expr(c.relpartbound, c.oid)
FROM pg_catalog.pg_class c, pg_catalog.pg_inherits i
WHERE c.oid = i.inhrelid AND i.inhparent = '<<REL>>'
ORDER BY pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT', c.oid::pg_catalog.regclass::pg_catalog.text;""",
        (),
    ),
}
# psql's queries that read object text: aimed at a relation outside the grant, refused
PSQL_OBJECT_TEXT = ("columns", "columns+", "indexes", "checks", "foreign-keys", "policies",
                    "statistics", "publications", "triggers")  # fmt: skip


def psql_attack(name: str, rel: str, *keys: str):
    sql = PSQL_D[name][0].replace("<<REL>>", f"<<{rel}>>")
    return A(sql, *keys, id=f"psql-{name}-of-{rel}")


PSQL_OF_SECRETS = [
    psql_attack("columns", "S", "default"),
    psql_attack("columns+", "S", "default", "colcomment"),
    psql_attack("columns", "TWIN", "twin_default"),
    psql_attack("indexes", "S", "indexpred", "indexpr"),
    psql_attack("indexes", "TWIN", "twin_indexpred"),
    psql_attack("checks", "S", "check"),
    psql_attack("checks", "REFS", "refcheck"),
    psql_attack("policies", "S", "policy", "withcheck"),
    psql_attack("policies", "TWIN", "twin_policy"),
    psql_attack("statistics", "S", "stxexpr"),
    psql_attack("publications", "S", "pubfilter"),
    psql_attack("triggers", "S", "tgargs", "tgqual"),
    psql_attack("triggers", "TWIN", "twin_tgargs"),
    A(
        PSQL_D["children"][0].replace("<<REL>>", "<<S_PARTED>>"),
        "partbound",
        id="psql-children-of-S_PARTED",
    ),
]

ATTACKS = (PIN_SHAPES + TEXT_OUTSIDE_THE_SELECT_LIST + WRAPPERS + WHOLE_ROWS_AND_COPY
           + OUTER_JOINS + DEPARSERS + NAMES + RAW_CATALOG_COLUMNS + SMUGGLING
           + BEYOND_THE_LIST + PSQL_OF_SECRETS)  # fmt: skip


# ==========================================================================================
# 1. The server's judgement: run by the upstream login itself, each attack reads a marker
# ==========================================================================================


def direct_text(pg, attack: Attack, oids: dict[str, str]) -> str:
    """Every byte the server sent for ``attack`` run directly as the upstream login, in a
    transaction rolled back (the writes among the attacks change nothing)."""
    with RawClient.direct(pg) as c:
        frames = c.query("BEGIN")
        for sql in attack.before:
            frames += c.query(fill(sql, oids))
        frames += c.query(fill(attack.sql, oids))
        for sql in attack.after:
            frames += c.query(fill(sql, oids))
        frames += c.query("ROLLBACK")
    return b"".join(frames).decode("utf-8", "replace")



def test_every_marker_is_planted_where_the_attacks_look(px, pg):
    """Each marker is in the database, readable by the upstream login."""
    reached = set()
    for param in ATTACKS:
        attack = param.values[0]
        if attack.direct:
            text = direct_text(pg, attack, px.oids)
            reached |= {key for key in M if shows(text, M[key])}
    assert reached == set(M), sorted(set(M) - reached)


def test_each_attack_reads_a_marker_directly(px, pg):
    """Run by the upstream login without the proxy, every attack marked ``direct`` shows at
    least one of its markers: each can fail through the proxy."""
    silent = []
    for param in ATTACKS:
        attack = param.values[0]
        if not attack.direct:
            continue
        text = direct_text(pg, attack, px.oids)
        if not any(shows(text, M[key]) for key in attack.keys):
            silent.append((param.id, text[-300:]))
    assert not silent, silent


# ==========================================================================================
# 2. Through the proxy: refused with 42501 over every protocol, no byte holds a marker
# ==========================================================================================


def attempt(handle, attack: Attack, token: str | None = None) -> dict[str, str]:
    return planted.received(
        handle,
        fill(attack.sql, handle.oids),
        before=tuple(fill(s, handle.oids) for s in attack.before),
        after=tuple(fill(s, handle.oids) for s in attack.after),
        token=token,
    )


def refused_without_a_trace(handle, attack: Attack) -> None:
    sql = fill(attack.sql, handle.oids)
    got = attempt(handle, attack)
    assert_no_leak(got, SECRETS, sql)
    assert_denied(got, sql)


@pytest.mark.parametrize("attack", PIN_SHAPES)
def test_pins_missing_ored_negated_or_elsewhere_are_refused(px, attack):
    refused_without_a_trace(px, attack)


@pytest.mark.parametrize("attack", TEXT_OUTSIDE_THE_SELECT_LIST)
def test_object_text_in_where_on_or_from_is_refused(px, attack):
    refused_without_a_trace(px, attack)


@pytest.mark.parametrize("attack", WRAPPERS)
def test_ctes_subqueries_lateral_unions_and_views_are_refused(px, attack):
    refused_without_a_trace(px, attack)


@pytest.mark.parametrize("attack", WHOLE_ROWS_AND_COPY)
def test_whole_rows_stars_and_copy_of_unpinned_catalogs_are_refused(px, attack):
    refused_without_a_trace(px, attack)


@pytest.mark.parametrize("attack", OUTER_JOINS)
def test_a_pin_on_the_preserved_side_of_an_outer_join_is_refused(px, attack):
    refused_without_a_trace(px, attack)


@pytest.mark.parametrize("attack", DEPARSERS)
def test_deparsers_and_descriptions_of_secret_objects_are_refused(px, attack):
    refused_without_a_trace(px, attack)


@pytest.mark.parametrize("attack", NAMES)
def test_views_pinned_by_ambiguous_or_wildcard_names_are_refused(px, attack):
    refused_without_a_trace(px, attack)


@pytest.mark.parametrize("attack", RAW_CATALOG_COLUMNS)
def test_raw_object_text_columns_of_secret_rows_are_refused(px, attack):
    refused_without_a_trace(px, attack)


@pytest.mark.parametrize("attack", SMUGGLING)
def test_object_text_smuggled_through_writes_prepare_cursors_is_refused(px, pg, attack):
    try:
        refused_without_a_trace(px, attack)
    finally:
        rows = pg.psql("SELECT id || ':' || note FROM public.mp_orders ORDER BY id", db="app")
        assert rows.split() == ["1:granted-row"], rows


@pytest.mark.parametrize("attack", BEYOND_THE_LIST)
def test_object_text_beyond_the_listed_catalogs_is_refused(px, attack):
    refused_without_a_trace(px, attack)


@pytest.mark.parametrize("attack", PSQL_OF_SECRETS)
def test_psql_describe_queries_aimed_at_secret_tables_are_refused(px, attack):
    refused_without_a_trace(px, attack)


def test_multi_statement_query_with_one_unpinned_statement_is_refused(px):
    """One simple Query, two statements: the pinned first one may not carry the second."""
    sql = fill(f"{AD} WHERE adrelid = <<G>>; {AD} WHERE adrelid = <<S>>", px.oids)
    with planted.session(px) as c:
        text = planted.text(c.query(sql))
    got = {"simple": text}
    assert_no_leak(got, SECRETS, sql)
    assert_denied(got, sql)


def test_a_bound_parameter_naming_a_secret_table_is_refused(px):
    """The pin's value arrives in Bind, not in the statement text."""
    sql = f"{AD} WHERE adrelid = $1"
    got = {}
    for label, oid in (("oid", px.oids["S"]), ("text-typed", px.oids["S"])):
        types = (26,) if label == "oid" else (25,)
        stmt = sql if label == "oid" else f"{AD} WHERE adrelid = $1::text::oid"
        with planted.session(px) as c:
            c.send(parse("", stmt, types), bind(params=[oid.encode()]), m.execute(), SYNC)
            got[label] = planted.text(c.frames_until_ready())
    assert_no_leak(got, SECRETS, sql)
    assert_denied(got, sql)


def _bound(px, statement: str, sql: str, binds, types=(), prepare: bool = True) -> str:
    """One session: Parse ``sql`` as ``statement`` (unless not ``prepare``), then each
    (params, formats) of ``binds`` bound, executed and synced in turn; every byte back."""
    with planted.session(px) as c:
        if prepare:
            c.send(parse(statement, sql, types), SYNC)
            c.frames_until_ready()
        out = []
        for params, formats in binds:
            c.send(bind("", statement, params=params, param_formats=formats), m.execute(), SYNC)
            out.append(planted.text(c.frames_until_ready()))
        c.send(m.query("SELECT 'still-usable'"))
        out.append(planted.text(c.frames_until_ready()))
        return "\n---\n".join(out)


BOUND = f"{AD} WHERE adrelid = $1"


@pytest.mark.parametrize(
    ("label", "sql", "types", "encode", "formats"),
    [
        ("text", BOUND, (), lambda oid: oid.encode(), ()),
        ("oid-typed text", BOUND, (26,), lambda oid: oid.encode(), ()),
        ("binary oid", BOUND, (26,), lambda oid: int(oid).to_bytes(4, "big"), (1,)),
        ("regclass by name", f"{AD} WHERE adrelid = $1::regclass", (25,), None, ()),
        ("through a chain", "SELECT a.attname, (SELECT pg_get_expr(d.adbin, d.adrelid) FROM "
         "pg_attrdef d WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum) FROM pg_attribute a "
         "WHERE a.attrelid = $1 AND a.attnum > 0", (26,), lambda oid: oid.encode(), ()),
    ],
)  # fmt: skip
def test_a_bound_parameter_pins_object_text_to_what_it_names(
    px, label, sql, types, encode, formats
):
    """A pin whose value arrives in Bind (psycopg 3's and asyncpg's server-side binding) is
    decided at each Bind, on the value: the granted table's text comes back, the secret
    table's is refused, the next Bind of the same statement is decided afresh, and the
    session stays usable."""
    names = {"G": "public.mp_orders", "S": "secret.mp_vault"}

    def value(key: str) -> bytes:
        return names[key].encode() if encode is None else encode(px.oids[key])

    got = _bound(px, "mp_bound", sql, [([value("G")], formats), ([value("S")], formats),
                                       ([value("G")], formats)], types)  # fmt: skip
    first, secret, again, usable = got.split("\n---\n")
    assert OK["default"] in first and "42501" not in first, (label, first[-600:])
    assert "42501" in secret and "mp_bound" in secret, (label, secret[-600:])
    assert OK["default"] in again and "42501" not in again, (label, again[-600:])
    assert "still-usable" in usable, usable
    assert not [x for x in SECRETS if x in got], (label, got[-900:])


@pytest.mark.parametrize(
    ("label", "params", "formats"),
    [("NULL", [None], ()), ("not an OID", [b"+1"], ()), ("binary of 2 bytes", [b"\x00\x01"], (1,)),
     ("missing", [], ())],
)  # fmt: skip
def test_a_bound_value_that_names_no_relation_pins_nothing(px, label, params, formats):
    got = _bound(px, "", BOUND, [(params, formats)], (26,))
    assert "42501" in got or "bind message supplies" in got, (label, got[-600:])
    assert not [x for x in SECRETS if x in got], (label, got[-900:])


def test_a_sql_prepare_is_not_pinned_by_its_parameter(px):
    """EXECUTE's arguments are not checked as Binds are: a SQL-level PREPARE whose pin is a
    parameter pins nothing."""
    got = planted.received(px, f"PREPARE mp_p(oid) AS {BOUND}")
    assert_denied(got, "PREPARE")
    got = planted.received(px, f"PREPARE mp_q(oid) AS {BOUND}; EXECUTE mp_q({px.oids['S']})")
    assert_no_leak(got, SECRETS, "PREPARE/EXECUTE")


def test_a_bind_too_large_to_check_ends_the_session(px):
    """A Bind of 256 KiB and more is streamed through in parts (the proxy never holds it
    whole): for a statement whose pin is a parameter it cannot be checked, so the session
    ends instead, before any of it reaches the server."""
    big = b"1" * (300 * 1024)
    with planted.session(px) as c:
        c.send(parse("", BOUND, (25,)), bind("", "", params=[big]), m.execute(), SYNC)
        try:
            text = planted.text(c.frames_until_ready())
        except (ConnectionError, EOFError, OSError, AssertionError) as exc:
            text = repr(exc)
    assert not [x for x in SECRETS if x in text], text[-600:]
    assert "still" not in text


def test_asyncpg_and_psycopg_bind_on_the_server(px):
    """The drivers as they bind by default: asyncpg (binary OIDs), psycopg 3 (server-side,
    text)."""
    import asyncio

    import asyncpg
    import psycopg

    g, sec = int(px.oids["G"]), int(px.oids["S"])

    async def with_asyncpg():
        conn = await asyncpg.connect(host=px.host, port=px.port, user=AGENT, password=px.token,
                                     database="app", ssl=False)  # fmt: skip
        try:
            rows = await conn.fetch(BOUND, g)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(BOUND, sec)
            again = await conn.fetch(BOUND, g)
            return str(rows) + str(again)
        finally:
            await conn.close()

    got = asyncio.run(with_asyncpg())
    assert OK["default"] in got and not [x for x in SECRETS if x in got], got
    dsn = (
        f"host={px.host} port={px.port} user={AGENT} password={px.token} dbname=app sslmode=disable"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        got = str(conn.execute(BOUND.replace("$1", "%s"), (g,)).fetchall())
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(BOUND.replace("$1", "%s"), (sec,))
        got += str(conn.execute(BOUND.replace("$1", "%s"), (g,)).fetchall())
    assert OK["default"] in got and not [x for x in SECRETS if x in got], got


# ==========================================================================================
# 3. What keeps working: psql's \d and \d+ of the granted table, pins as the design names
#    them, SQLAlchemy's reflection, and grants that open a catalog
# ==========================================================================================


def allowed(handle, sql: str, expect: tuple[str, ...] = (), token: str | None = None):
    got = planted.received(handle, sql, token=token)
    assert_no_leak(got, SECRETS, sql)
    for mode, text in got.items():
        assert "42501" not in text and "pgwitness: task" not in text, (mode, sql, text[-600:])
        missing = [OK[key] for key in expect if OK[key] not in text]
        assert not missing, (mode, missing, sql, text[-600:])
    return got


@pytest.mark.parametrize("name", list(PSQL_D))
def test_psql_describe_queries_of_the_granted_table_work(px, name):
    sql, expect = PSQL_D[name]
    allowed(px, sql.replace("<<REL>>", px.oids["G"]), expect)


PINNED = [
    (f"{AD} WHERE adrelid = <<G>>", ("default",)),
    (f"{AD} WHERE adrelid = '<<G>>'", ("default",)),
    (f"{AD} WHERE adrelid IN (<<G>>)", ("default",)),
    (f"{AD} WHERE adrelid = 'public.mp_orders'::regclass", ("default",)),
    (f"{AD} WHERE adrelid = 'public.mp_orders'::regclass ORDER BY 1", ("default",)),
    (
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d, pg_attribute a "
        "WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.attrelid = '<<G>>'",
        ("default",),
    ),
    (
        "SELECT c.relname, pg_get_expr(d.adbin, d.adrelid) FROM pg_class c "
        "LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adrelid = <<G>> WHERE c.oid = <<G>>",
        ("default",),
    ),
    (
        "SELECT c.relname, pg_get_expr(d.adbin, d.adrelid) FROM pg_class c "
        "LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND c.oid = <<G>>",
        ("default",),
    ),
    (
        "SELECT a.attname, (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d "
        "WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum) FROM pg_attribute a "
        "WHERE a.attrelid = <<G>> AND a.attnum > 0",
        ("default",),
    ),
    (
        "SELECT pg_get_constraintdef(oid, true) FROM pg_constraint WHERE conrelid = <<G>>",
        ("check",),
    ),
    ("SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = <<G>>", ("indexpred",)),
    ("SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = <<G>>", ("tgargs",)),
    ("SELECT pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polrelid = <<G>>", ("policy",)),
    ("SELECT description FROM pg_description WHERE objoid = <<G>> AND objsubid = 0", ("comment",)),
    (
        "SELECT string_agg(description, ',' ORDER BY description) FROM pg_description "
        "WHERE objoid = <<G>> GROUP BY objoid",
        ("comment", "colcomment"),
    ),
    (
        "SELECT column_default FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name = 'mp_orders'",
        ("default",),
    ),
    (
        "SELECT qual FROM pg_policies WHERE schemaname = 'public' AND tablename = 'mp_orders'",
        ("policy",),
    ),
    (
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'mp_orders'",
        ("indexpred",),
    ),
    (
        "SELECT action_statement FROM information_schema.triggers "
        "WHERE event_object_schema = 'public' AND event_object_table = 'mp_orders'",
        ("tgargs",),
    ),
    ("SELECT obj_description(<<G>>, 'pg_class')", ("comment",)),
    ("SELECT col_description('public.mp_orders'::regclass, 4)", ("colcomment",)),
    ("SELECT to_jsonb(d) FROM pg_policy d WHERE d.polrelid = <<G>>", ()),
]


@pytest.mark.parametrize("sql,expect", PINNED, ids=[sql for sql, _ in PINNED])
def test_object_text_pinned_to_the_granted_table_is_shown(px, sql, expect):
    allowed(px, fill(sql, px.oids), expect)


def _psql(handle, pg, command: str) -> subprocess.CompletedProcess:
    local = pg.bindir / "psql"
    binary = str(local) if local.exists() else (shutil.which("psql") or "psql")
    env = dict(os.environ, PGPASSWORD=handle.token, PGSSLMODE="disable", PGCONNECT_TIMEOUT="10")
    argv = [binary, "-X", "-h", handle.host, "-p", str(handle.port), "-U", AGENT, "-d", "app"]
    return subprocess.run([*argv, "-c", command], env=env, capture_output=True, text=True,
                          timeout=30)  # fmt: skip


@pytest.mark.parametrize("command", [r"\d public.mp_orders", r"\d+ public.mp_orders"])
def test_psql_describe_of_the_granted_table_through_the_proxy(px, pg, command):
    result = _psql(px, pg, command)
    assert result.returncode == 0 and "pgwitness" not in result.stderr, result.stderr
    out = result.stdout
    for key in ("default", "check", "indexpred", "tgargs", "policy", "pubfilter"):
        assert OK[key] in out, (key, out)
    assert "Referenced by:" in out and "mp_refs" in out, out
    if "+" in command:
        assert OK["colcomment"] in out, out
    assert not [s for s in SECRETS if s in out + result.stderr], out


def _reflect(px, token: str, client_side: bool = True):
    import psycopg
    import sqlalchemy as sa

    url = sa.engine.URL.create("postgresql+psycopg", username=AGENT, password=token,
                               host=px.host, port=px.port, database="app",
                               query={"sslmode": "disable"})  # fmt: skip
    args = {"cursor_factory": psycopg.ClientCursor} if client_side else {}
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=args)
    try:
        insp = sa.inspect(engine)
        return (
            {c["name"]: c for c in insp.get_columns("mp_orders", schema="public")},
            insp.get_check_constraints("mp_orders", schema="public"),
            insp.get_indexes("mp_orders", schema="public"),
            insp.get_table_comment("mp_orders", schema="public"),
            insp.get_foreign_keys("mp_orders", schema="public"),
        )
    finally:
        engine.dispose()


def test_sqlalchemy_reflection_needs_the_domain_catalogs_named(px):
    """SQLAlchemy 2 reflects a table's columns after loading every domain of the database
    with its DEFAULT and CHECKs (no pin: a FROM subquery over pg_constraint), and this
    database has one outside the grant holding a secret: refused, saying which scope
    allows it, and nothing leaks."""
    import sqlalchemy as sa

    with pytest.raises(sa.exc.ProgrammingError) as refused:
        _reflect(px, px.token)
    text = str(refused.value)
    # (its enums first, since session 39: labels are object text too, red-team round 91)
    assert "may not read enumlabel of pg_catalog.pg_enum" in text, text
    assert not [s for s in SECRETS if s in text], text
    token = grant_issue(px, agent=AGENT, task="MPINS-SA-ENUM",
                        scopes=f"{SCOPES} read:pg_catalog.pg_enum")[1]  # fmt: skip
    with pytest.raises(sa.exc.ProgrammingError) as refused:
        _reflect(px, token)
    text = str(refused.value)
    assert "may not read conbin of pg_catalog.pg_constraint" in text, text
    assert not [s for s in SECRETS if s in text], text


@pytest.fixture(scope="module")
def reflect_token(px):
    """A grant that names the catalogs SQLAlchemy's domain and enum loading reads."""
    return grant_issue(px, agent=AGENT, task="MPINS-SA",
                       scopes=f"{SCOPES} read:pg_catalog.pg_constraint,pg_catalog.pg_type,pg_catalog.pg_index,pg_catalog.pg_enum")[1]  # fmt: skip


@pytest.mark.parametrize("client_side", [True, False], ids=["client-side", "server-side"])
def test_sqlalchemy_reflects_the_granted_table(px, reflect_token, client_side):
    """With those catalogs named, the rest of its reflection pins by name (``relname IN
    (...)`` and ``nspname = ...``, through LEFT JOINs and correlated subqueries), as
    literals (psycopg's client-side binding writes them into the text) or as parameters
    (psycopg's default: decided at each Bind): the granted table's object text comes
    back, and the secret table's defaults, comments, indexes and policies do not."""
    columns, checks, indexes, comment, fks = _reflect(px, reflect_token, client_side)
    assert OK["default"] in str(columns["note"]["default"]), columns
    assert OK["colcomment"] in str(columns["note"].get("comment")), columns
    assert any(OK["check"] in c["sqltext"] for c in checks), checks
    assert OK["indexpred"] in str(indexes), indexes
    assert comment["text"] == OK["comment"], comment
    assert fks and fks[0]["referred_table"] == "mp_vault", fks
    everything = str((columns, checks, indexes, comment, fks))
    named = {M["domdefault"], M["domcheck"]}  # the domain catalogs are the grant's now
    assert not [s for s in SECRETS if s in everything and s not in named], everything


@pytest.fixture(scope="module")
def catalog_token(px):
    """A second grant that opens pg_attrdef itself (``read:pg_catalog.pg_attrdef``)."""
    return grant_issue(px, agent=AGENT, task="MPINS-CAT",
                       scopes=f"{SCOPES} read:pg_catalog.pg_attrdef")[1]  # fmt: skip


@pytest.mark.parametrize("sql", [AD, f"{AD} WHERE adrelid = <<S>>"])
def test_a_grant_naming_the_catalog_reads_it_unpinned(px, catalog_token, sql):
    sql = fill(sql, px.oids)
    got = planted.received(px, sql, token=catalog_token)
    for mode, text in got.items():
        assert M["default"] in text and "42501" not in text, (mode, sql, text[-600:])


def test_a_grant_naming_one_catalog_opens_no_other(px, catalog_token):
    for sql in ("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = <<S>>",
                "SELECT description FROM pg_description WHERE objoid = <<S>>"):  # fmt: skip
        sql = fill(sql, px.oids)
        got = planted.received(px, sql, token=catalog_token)
        assert_no_leak(got, SECRETS, sql)
        assert_denied(got, sql)


# ==========================================================================================
# 4. Decisions remembered by the proxy: one pin value's answer is never another's
# ==========================================================================================

FOREIGN_KEYS_ONLY = [  # no literals in a foreign key's definition: shown or refused, no leak
    A("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'f'", direct=False),
    A(
        PSQL_D["foreign-keys"][0].replace("<<REL>>", "<<REFS>>"),
        direct=False,
        id="psql-foreign-keys-of-REFS",
    ),
    A(
        PSQL_D["referenced-by"][0].replace("<<REL>>", "<<S>>"),
        direct=False,
        id="psql-referenced-by-of-S",
    ),
]


@pytest.mark.parametrize("attack", FOREIGN_KEYS_ONLY)
def test_foreign_key_definitions_of_other_tables_leak_nothing(px, attack):
    sql = fill(attack.sql, px.oids)
    assert_no_leak(attempt(px, attack), SECRETS, sql)


SECRET_FORMS = ["'<<S>>'", "'+<<S>>'", "' <<S>>'", "'<<S>> '", "'0<<S>>'"]


def refused(handle, sql: str) -> None:
    got = planted.received(handle, sql)
    assert_no_leak(got, SECRETS, sql)
    assert_denied(got, sql)


@pytest.mark.parametrize("form", SECRET_FORMS)
def test_allowing_the_granted_pin_does_not_allow_the_secret_one(px, form):
    """Same statement shape, the granted OID first, then the secret table's: a decision the
    proxy remembers by shape (constants stripped) must not carry the pin's value along."""
    n = SECRET_FORMS.index(form)
    base = f"SELECT pg_get_expr(adbin, adrelid) AS mp_cache_a{n} FROM pg_attrdef WHERE adrelid = "
    allowed(px, fill(base + "'<<G>>'", px.oids), ("default",))
    refused(px, fill(base + form, px.oids))
    allowed(px, fill(base + "'<<G>>'", px.oids), ("default",))


@pytest.mark.parametrize("form", SECRET_FORMS)
def test_refusing_the_secret_pin_does_not_refuse_the_granted_one(px, form):
    """The other order: a refusal remembered by shape would refuse psql's \\d of the
    granted table for the rest of the session's life (a false denial, not a leak)."""
    n = SECRET_FORMS.index(form)
    base = f"SELECT pg_get_expr(adbin, adrelid) AS mp_cache_b{n} FROM pg_attrdef WHERE adrelid = "
    refused(px, fill(base + form, px.oids))
    allowed(px, fill(base + "'<<G>>'", px.oids), ("default",))
