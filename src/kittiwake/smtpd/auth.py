"""SMTP AUTH (RFC 4954) for a session: mechanisms, credential checks, lockouts, ``AUTH=``.

Owns the ``Authenticator`` a listener hands its sessions, and ``NoUsers`` (the same with
nobody in it). ``begin(mechanism, client_ip)`` returns an ``AuthExchange`` the session
feeds the client's lines; each call answers with a challenge (bytes for ``334``),
``Authenticated(user)`` (``235``) or a ``Reply``:

* ``535 5.7.8`` bad credentials — unknown user, wrong password, disabled user, proxy
  authorization; each one counted by the ``FailureLimiter`` (per client and per user);
* ``454 4.7.0`` while the client or the user is locked out (RFC 4954 §6), without
  looking at the credentials;
* ``501 5.5.2`` a message that breaks the mechanism's syntax.

Passwords (PLAIN, LOGIN) are verified against the argon2id hash in a worker thread, at most
``VERIFY_CONCURRENCY`` at once (a password sprayer cannot eat every CPU); an unknown user
costs the same time as a wrong password. After a verified password whose stored hash has
older argon2 parameters (or fewer SCRAM iterations) than today's, the credentials are
re-hashed — the only moment the password is known — and stored by compare-and-swap
(``CredentialUpdates``), in worker threads, before the 235; a failed update is logged and
the login stands (RFC 5802 §5 lets the server change the iteration count).
``submitter()`` decides the ``AUTH=`` value kept with the message (RFC 4954 §5).
Security: HIGH — never logs secrets.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from kittiwake.auth.hashing import (
    describe,
    dummy_verify,
    needs_upgrade,
    upgraded_credentials,
    verify_password,
)
from kittiwake.auth.limiter import FailureLimiter
from kittiwake.auth.ownership import Ownership
from kittiwake.auth.sasl import (
    BadCredentials,
    Challenge,
    CheckPassword,
    LoginMechanism,
    Malformed,
    Mechanism,
    PlainMechanism,
    Step,
    Verified,
)
from kittiwake.auth.scram import ScramMechanism
from kittiwake.auth.store import CredentialUpdates, User, UserDirectory
from kittiwake.envelope import Reply

__all__ = [
    "AUTH_FAILED",
    "AUTH_LOCKED",
    "AUTH_MALFORMED",
    "MECHANISMS",
    "AuthExchange",
    "Authenticated",
    "Authenticator",
    "NoUsers",
    "UserAuthenticator",
]

log = logging.getLogger("kittiwake.smtpd")

MECHANISMS = ("PLAIN", "LOGIN", "SCRAM-SHA-256")  # every mechanism we implement
VERIFY_CONCURRENCY = 2  # argon2 checks at once (each ~50 ms of CPU and 19 MiB)

AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_LOCKED = Reply(454, "4.7.0", "Temporary authentication failure")
AUTH_MALFORMED = Reply(501, "5.5.2", "Malformed authentication response")


@dataclass(frozen=True, slots=True)
class Authenticated:
    user: str


AuthOutcome = bytes | Authenticated | Reply


class AuthExchange(Protocol):
    async def start(self, initial: bytes | None) -> AuthOutcome: ...
    async def step(self, response: bytes) -> AuthOutcome: ...


class Authenticator(Protocol):
    """What ``ListenerSettings.authenticator`` must offer a session."""

    def begin(self, mechanism: str, client_ip: str) -> AuthExchange: ...

    def submitter(self, user: str | None, param: str | None, sender: str) -> str | None:
        """The ``AUTH=`` value to keep with a message (``Envelope.auth``), RFC 4954 §5."""
        ...


class _Nobody:
    """An empty ``UserDirectory``."""

    def has_users(self) -> bool:
        return False

    def get(self, name: str) -> User | None:
        return None

    def owner_of(self, address: str) -> str | None:
        return None

    def addresses_of(self, name: str) -> tuple[str, ...]:
        return ()

    def exists(self, address: str) -> bool:
        return False

    def fake_salt(self, name: str) -> bytes:
        return b"kittiwake-nobody"


class UserAuthenticator:
    """The ``Authenticator`` over a user directory (see the module docstring)."""

    def __init__(
        self,
        users: UserDirectory,
        limiter: FailureLimiter | None = None,
        ownership: Ownership | None = None,
    ) -> None:
        self.users = users
        self.limiter = limiter or FailureLimiter()
        self.ownership = ownership or Ownership(users)
        self._verifying = asyncio.Semaphore(VERIFY_CONCURRENCY)
        self._upgrading: set[str] = set()  # user names being upgraded now

    def begin(self, mechanism: str, client_ip: str) -> AuthExchange:
        return _Exchange(self, _mechanism(mechanism, self.users), client_ip)

    def submitter(self, user: str | None, param: str | None, sender: str) -> str | None:
        if user is None:  # untrusted: "as if AUTH=<> was supplied" (RFC 4954 §5)
            return None if param is None else "<>"
        if param is not None:
            return param if param == "<>" or self.ownership.owns(user, param) else "<>"
        # No AUTH=: we may generate one from the identity — the sender, when it is the user's.
        return sender if sender and self.ownership.owns(user, sender) else "<>"

    async def check_password(self, user: User | None, password: str) -> bool:
        async with self._verifying:
            if user is None or user.disabled:
                return await asyncio.to_thread(dummy_verify, password)
            return await asyncio.to_thread(
                verify_password, user.credentials.password_hash, password
            )

    async def upgrade(self, user: User, password: str) -> None:
        """Re-hash ``user``'s verified ``password`` with today's parameters if the stored
        ones are older, and store it unless the credentials changed meanwhile. Never
        raises (but for cancellation): the login has succeeded whatever happens here."""
        store, name, old = self.users, user.name, user.credentials
        if not isinstance(store, CredentialUpdates) or not needs_upgrade(old):
            return
        if name in self._upgrading:  # another login of the same user is at it
            return
        self._upgrading.add(name)
        try:
            async with self._verifying:  # one more argon2 hash: same CPU budget
                new = await asyncio.to_thread(upgraded_credentials, old, password)
            if new is None:
                return
            if await store.update_credentials(name, old, new):
                log.info(
                    "user %s: credentials upgraded from %s to %s",
                    name,
                    describe(old),
                    describe(new),
                )
            else:
                log.info("user %s: credentials changed meanwhile, not upgraded", name)
        except Exception as exc:
            log.warning("user %s: cannot upgrade the stored credentials: %s", name, exc)
        finally:
            self._upgrading.discard(name)


class NoUsers(UserAuthenticator):
    """No user store: every attempt fails with 535 5.7.8 (and is counted)."""

    def __init__(self) -> None:
        super().__init__(_Nobody())


def _mechanism(name: str, users: UserDirectory) -> Mechanism:
    if name == "PLAIN":
        return PlainMechanism()
    if name == "LOGIN":
        return LoginMechanism()
    if name == "SCRAM-SHA-256":
        return ScramMechanism(users)
    # The core only raises AuthStart for mechanisms we configured; MECHANISMS lists them.
    raise ValueError(f"unsupported SASL mechanism {name!r}")


class _Exchange:
    def __init__(self, owner: UserAuthenticator, mechanism: Mechanism, client_ip: str) -> None:
        self.owner = owner
        self.mechanism = mechanism
        self.client_ip = client_ip

    async def start(self, initial: bytes | None) -> AuthOutcome:
        limiter = self.owner.limiter
        left = limiter.ip_locked(self.client_ip)
        if left:
            log.info("AUTH from %s refused: client locked out (%.0fs left)", self.client_ip, left)
            return AUTH_LOCKED
        return await self._outcome(self.mechanism.start(initial))

    async def step(self, response: bytes) -> AuthOutcome:
        return await self._outcome(self.mechanism.step(response))

    async def _outcome(self, step: Step) -> AuthOutcome:
        limiter = self.owner.limiter
        name = self.mechanism.username
        if name is not None and not isinstance(step, Malformed):
            left = limiter.user_locked(name)
            if left:
                log.info(
                    "AUTH from %s refused: user %s locked out (%.0fs left)",
                    self.client_ip,
                    name,
                    left,
                )
                return AUTH_LOCKED
        if isinstance(step, Challenge):
            return step.data
        if isinstance(step, Malformed):
            log.info("AUTH %s from %s: %s", self.mechanism.name, self.client_ip, step.reason)
            return AUTH_MALFORMED
        if isinstance(step, CheckPassword):
            user = self.owner.users.get(step.username)
            if await self.owner.check_password(user, step.password):
                if user is not None:  # always: check_password is False without one
                    await self.owner.upgrade(user, step.password)
                step = Verified(step.username)
            else:
                reason = "no such user" if user is None else "wrong password"
                if user is not None and user.disabled:
                    reason = "user disabled"
                step = BadCredentials(step.username, reason)
        if isinstance(step, Verified):
            limiter.success(self.client_ip)
            return Authenticated(step.username)
        limiter.failure(self.client_ip, step.username, f"{self.mechanism.name}: {step.reason}")
        return AUTH_FAILED
