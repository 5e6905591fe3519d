"""Bearer tokens: who is calling (subject) and as what (role).

Tokens are JWTs (HS256, PyJWT) signed with the service secret (``O2O_SECRET``), so any
JWT tool can read them and nothing but the secret's holder can mint them. Claims:
``sub`` (customer, courier or ops id), ``role``, ``iat``, ``exp`` and, for a share link,
``ord`` (the one order it may watch). Roles: ``customer``, ``courier``, ``ops``, and
``viewer`` (a share link: read-only, one order, short-lived).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal, get_args

import jwt

Role = Literal["customer", "courier", "ops", "viewer"]
ROLES: tuple[Role, ...] = get_args(Role)
ISSUED_ROLES: tuple[Role, ...] = ("customer", "courier", "ops")
"""Roles ``o2o token create`` issues; viewers come only from share links."""
ALGORITHM = "HS256"
MIN_SECRET_LEN = 32
DEFAULT_TTL_S = 24 * 3600
MAX_TTL_S = 365 * 24 * 3600
MAX_SUBJECT_LEN = 128


class AuthError(Exception):
    """A missing, malformed, expired or forged token (``reason`` is a slug)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    subject: str
    order_id: str | None = None
    expires_at: float | None = None


def check_secret(secret: str | None) -> str:
    """``secret`` if it can sign tokens; :class:`AuthError` if missing or guessable.

    A whitespace-only key passes the length check, yet is among the first a forger
    would try (and is what a mangled env file or template tends to leave behind).
    """
    if not secret:
        raise AuthError("no_secret", "set O2O_SECRET to the token signing key")
    if len(secret) < MIN_SECRET_LEN:
        raise AuthError("weak_secret", f"O2O_SECRET must be at least {MIN_SECRET_LEN} characters")
    if not secret.strip():
        raise AuthError("weak_secret", "O2O_SECRET must not be blank (whitespace only)")
    return secret


def create_token(
    secret: str,
    role: Role,
    subject: str,
    ttl_s: float = DEFAULT_TTL_S,
    *,
    order_id: str | None = None,
    now: float | None = None,
) -> str:
    """A signed token for ``subject`` acting as ``role``, valid for ``ttl_s`` seconds."""
    check_secret(secret)
    if role not in ROLES:
        raise AuthError("bad_role", f"role must be one of {', '.join(ROLES)}")
    if not subject or len(subject) > MAX_SUBJECT_LEN or not subject.isprintable():
        raise AuthError("bad_subject", f"subject must be 1-{MAX_SUBJECT_LEN} printable characters")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise AuthError("bad_ttl", f"ttl must be in (0, {MAX_TTL_S}] seconds")
    if (role == "viewer") != (order_id is not None):
        raise AuthError("bad_scope", "viewer tokens, and only they, name one order")
    t = time.time() if now is None else now
    # exp rounds up: a token is never valid for less than ``ttl_s`` (a sub-second share
    # link truncated to ``iat + 0`` would be born expired).
    iat, exp = int(t), math.ceil(t + ttl_s)
    claims: dict[str, object] = {"sub": subject, "role": role, "iat": iat, "exp": exp}
    if order_id is not None:
        claims["ord"] = order_id
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Principal:
    """The principal a token names; :class:`AuthError` if it is not valid now."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "role"]}
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token_expired", "the token has expired") from None
    except jwt.InvalidTokenError as e:
        raise AuthError("invalid_token", f"invalid token: {e}") from None
    role, sub, order = claims.get("role"), claims.get("sub"), claims.get("ord")
    if role not in ROLES or not isinstance(sub, str) or not sub:
        raise AuthError("invalid_token", "token has no valid role and subject")
    scoped = isinstance(order, str) and bool(order) if role == "viewer" else "ord" not in claims
    if not scoped:
        raise AuthError("invalid_token", "viewer tokens, and only they, name one order")
    exp = claims.get("exp")
    return Principal(role, sub, order if isinstance(order, str) else None, float(exp or 0))


class TokenCache:
    """Verified tokens, so a courier posting every second is not re-verified each time.

    A token's signature and claims cannot change, so once verified it stays valid until
    its ``exp``, which is checked on every use. Bounded: the oldest entries go first.
    """

    def __init__(self, secret: str, max_size: int = 20_000) -> None:
        self.secret = secret
        self.max_size = max_size
        self._seen: dict[str, Principal] = {}

    def verify(self, token: str, now: float | None = None) -> Principal:
        p = self._seen.get(token)
        if p is None:
            p = verify_token(self.secret, token)
            if len(self._seen) >= self.max_size:
                del self._seen[next(iter(self._seen))]
            self._seen[token] = p
        if p.expires_at is not None and p.expires_at <= (time.time() if now is None else now):
            self._seen.pop(token, None)
            raise AuthError("token_expired", "the token has expired")
        return p
