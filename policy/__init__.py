"""Statement policy: classify SQL, check it against a grant's scopes, cache the answers."""

import common  # noqa: F401  # first: decides compiled or pure hot path (common/compiled.py)
from policy.classify import Classified, StatementClass, classify
from policy.decide import Decision, decide
from policy.engine import StatementPolicy, Verdict
from policy.lexer import fingerprint_statements
from policy.scopes import ScopeError, Scopes, parse_scopes
from policy.startup import check_startup_params

__all__ = [
    "Classified",
    "Decision",
    "ScopeError",
    "Scopes",
    "StatementClass",
    "StatementPolicy",
    "Verdict",
    "check_startup_params",
    "classify",
    "decide",
    "fingerprint_statements",
    "parse_scopes",
]
