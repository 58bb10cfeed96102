"""Task grants, in one place: who may connect, for which task, with which scopes, until when.

- ``model``: the ``Grant`` record, validation, tokens, verifiers, DSNs (pure).
- ``store``: where grants live (``store/sqlite.py``, ``store/postgres.py``; ``open_store``).
- ``auth``: the login seam (``Identity``, ``AuthPlan``, ``Authenticator``) and
  ``GrantAuthenticator``, which answers a login from the store.
- ``roles``: per-grant database role names and privilege statements (pure).
- ``admin``: the admin HTTP API; ``cli``: ``pgwitness grant | grants | revoke``.

Importing the package loads only the model. Nothing here imports the server
(``proxy.*``); the database side of per-grant roles (``proxy.provision``) is handed in
as a ``RoleHook``.
"""

from .model import Grant, GrantError, GrantNotFound, GrantStateError, make_dsn

__all__ = ["Grant", "GrantError", "GrantNotFound", "GrantStateError", "make_dsn"]
