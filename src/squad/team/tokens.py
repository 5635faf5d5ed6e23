"""Named API tokens with roles (docs/team.md "Tokens and roles").

A token is `sqt_<id>_<secret>`: the public id finds its row, the secret is checked against a
SHA-256 digest salted per token, compared in constant time. The secret is printed once, at
creation, and stored nowhere. `SQUAD_API_TOKEN` stays valid as an admin token.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from squad.core.errors import NotFoundError, SquadError
from squad.store.card_store import now_s
from squad.store.team_store import TeamStore, TokenRow

TOKEN_PREFIX = "sqt_"
TOKEN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
_TOKEN_RE = re.compile(r"^sqt_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})$")
#: the name `SQUAD_API_TOKEN` acts under (audit rows, "signed in as")
ENV_TOKEN_NAME = "SQUAD_API_TOKEN"
#: the name of every request when the server has no token at all (open, loopback use)
ANONYMOUS = "anonymous"


class Role(enum.IntEnum):
    """What a token may do; each role may do everything of the roles below it."""

    VIEWER = 1  # every read: API, WebSocket, dashboard
    OPERATOR = 2  # also add, retry, cancel, approve, reject, land, answer
    ADMIN = 3  # also tokens and the audit log

    @property
    def label(self) -> str:
        """`viewer`, `operator`, `admin`."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        """A role from its name; SquadError (exit 2 / 400) for anything else."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise SquadError(f"unknown role {text!r} (viewer, operator or admin)") from None


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a token's name and role."""

    name: str
    role: Role


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode("utf-8", "replace")).hexdigest()


def create_token(team: TeamStore, name: str, role: Role) -> str:
    """Store a new token and return it (the only time it is ever shown)."""
    if not TOKEN_NAME_RE.fullmatch(name):
        raise SquadError(f"invalid token name {name!r}: letters, digits and . _ @ - (at most 100)")
    token_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_hex(16)
    team.add_token(TokenRow(token_id=token_id, name=name, role=role.label, salt=salt,
                            digest=_digest(salt, secret), created_at=now_s(), last_used_at=None, revoked_at=None))
    return f"{TOKEN_PREFIX}{token_id}_{secret}"


def revoke_token(team: TeamStore, name: str) -> None:
    """Revoke the live token of this name (NotFoundError when there is none)."""
    if not team.revoke_token(name):
        raise NotFoundError(f"no live token named {name!r}")


def env_token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a presented token with `SQUAD_API_TOKEN` (over SHA-256 digests,
    so not even the length leaks)."""
    if given is None:
        return False
    return hmac.compare_digest(hashlib.sha256(given.encode("utf-8", "replace")).digest(),
                               hashlib.sha256(expected.encode("utf-8")).digest())


def verify_token(team: TeamStore, given: str, *, touch: bool = True) -> Principal | None:
    """The principal of a stored, unrevoked token, or None."""
    match = _TOKEN_RE.fullmatch(given)
    if match is None:
        return None
    row = team.token(match.group(1))
    if row is None:
        return None
    ok = hmac.compare_digest(_digest(row.salt, match.group(2)), row.digest)
    if not ok or row.revoked_at is not None:
        return None
    if touch:
        team.touch_token(row.token_id, now_s())
    return Principal(name=row.name, role=Role.parse(row.role))


def principal_for(team: TeamStore, env_token: str | None, given: str | None) -> Principal | None:
    """Who `given` is: `SQUAD_API_TOKEN` (admin), a stored token, or None (unknown or revoked)."""
    if env_token and env_token_matches(env_token, given):
        return Principal(ENV_TOKEN_NAME, Role.ADMIN)
    if given and given.startswith(TOKEN_PREFIX):
        return verify_token(team, given)
    return None
