"""Console users: names, roles, password hashing and API tokens. Pure, apart from the KDF.

Passwords are hashed with Argon2id (memory-hard; argon2-cffi's defaults, RFC 9106's second
recommended profile). API tokens are 256 random bits shown once; only their SHA-256 is kept,
which is enough for a secret that long (no dictionary to try).
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

NAME_RE = re.compile(r"[a-z][a-z0-9._-]{0,31}")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # hashing a megabyte on every login attempt is a denial of service
TOKEN_PREFIX = "scr_"  # noqa: S105  # marks a string as a screener token; not a secret

_hasher = PasswordHasher()


class Role(enum.StrEnum):
    """Staff view the console and block or allow numbers; admins also import, export, delete
    recordings and manage users."""

    ADMIN = "admin"
    STAFF = "staff"


@dataclass(frozen=True, slots=True)
class User:
    """A console user as the database keeps it (no password hash: that stays in the store)."""

    id: int
    name: str
    role: Role
    epoch: int  # bumped by passwd and logout: every older session cookie stops working

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def check_name(name: str) -> str:
    """``name`` if it is a valid user name; ValueError saying what is allowed otherwise."""
    if not NAME_RE.fullmatch(name):
        raise ValueError(
            f"user name {name!r}: use 1-32 lower-case letters, digits, '.', '_' or '-',"
            " starting with a letter"
        )
    return name


def check_password(password: str) -> str:
    """``password`` if it is acceptable; ValueError saying why not otherwise."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"password too short: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"password too long: at most {MAX_PASSWORD} characters")
    return password


def hash_password(password: str) -> str:
    """An Argon2id hash (with its salt and parameters) of ``password``."""
    return _hasher.hash(password)


def verify_password(stored: str, password: str) -> bool:
    """Whether ``password`` matches the stored hash; never raises for a wrong or bad hash."""
    if len(password) > MAX_PASSWORD:
        return False
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# Verified against when the user does not exist, so that a login for a missing name costs
# the same time as one for a real name (no user enumeration by timing).
DUMMY_HASH = hash_password("not a password of anyone's")


def new_token() -> str:
    """A fresh API token, to be shown once."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
