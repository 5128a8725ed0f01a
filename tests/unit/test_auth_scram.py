"""SCRAM-SHA-256 server (RFC 7677, RFC 5802): the RFC 7677 §3 test vector, failures, and a
round trip with the independent test client."""

from __future__ import annotations

import base64

import pytest

from kittiwake.auth.hashing import Credentials, scram_keys
from kittiwake.auth.sasl import BadCredentials, Challenge, Malformed, Verified
from kittiwake.auth.scram import ScramMechanism
from kittiwake.auth.store import User
from tests.support.scram import ScramClient

# RFC 7677 §3.
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


class Users:
    def __init__(self, *users: User) -> None:
        self.users = {u.name: u for u in users}

    def get(self, name: str) -> User | None:
        return self.users.get(name)

    def fake_salt(self, name: str) -> bytes:
        return b"fake-salt-" + name.encode()[:6]


def user(name: str = "user", password: str = "pencil", *, disabled: bool = False) -> User:
    keys = scram_keys(password, SALT, 4096)
    return User(name, Credentials("$argon2id$unused", keys), disabled=disabled)


def server(*users: User) -> ScramMechanism:
    return ScramMechanism(Users(*(users or (user(),))), nonce=lambda: SERVER_NONCE)


def test_rfc7677_vector() -> None:
    mech = server()
    assert mech.start(None) == Challenge(b"")
    assert mech.step(CLIENT_FIRST) == Challenge(SERVER_FIRST)
    assert mech.username == "user"
    assert mech.step(CLIENT_FINAL) == Challenge(SERVER_FINAL)
    assert mech.step(b"") == Verified("user")


def test_rfc7677_vector_as_initial_response() -> None:
    mech = server()
    assert mech.start(CLIENT_FIRST) == Challenge(SERVER_FIRST)
    assert mech.step(CLIENT_FINAL) == Challenge(SERVER_FINAL)


def test_wrong_password() -> None:
    mech = server(user(password="not-pencil"))
    mech.start(CLIENT_FIRST)
    result = mech.step(CLIENT_FINAL)
    assert isinstance(result, BadCredentials) and result.username == "user"


def test_unknown_user_looks_like_a_known_one_until_the_end() -> None:
    mech = server()
    first = mech.start(b"n,,n=nobody,r=abc")
    assert isinstance(first, Challenge)
    fields = dict(f.split("=", 1) for f in first.data.decode().split(","))
    assert fields["r"] == "abc" + SERVER_NONCE
    assert base64.b64decode(fields["s"]) == Users().fake_salt("nobody")
    client = ScramClient("nobody", "pencil", nonce="abc")
    client.first()
    result = mech.step(client.final(first.data))
    assert result == BadCredentials("nobody", "no such user")


def test_disabled_user_fails_with_the_right_password() -> None:
    mech = server(user(disabled=True))
    mech.start(CLIENT_FIRST)
    assert isinstance(mech.step(CLIENT_FINAL), BadCredentials)


@pytest.mark.parametrize("name", ["user", "a,b=c", "Ünïcode"])
def test_round_trip_with_the_test_client(name: str) -> None:
    u = User(name.lower(), Credentials("x", scram_keys("pässword", b"salt" * 4, 4096)))
    mech = ScramMechanism(Users(u))
    client = ScramClient(name, "pässword")
    first = mech.start(client.first())
    assert isinstance(first, Challenge)
    final = mech.step(client.final(first.data))
    assert isinstance(final, Challenge)
    client.check_final(final.data)
    assert mech.step(b"") == Verified(name.lower())


def test_authzid_same_user_ok_other_user_refused() -> None:
    ok = ScramClient("user", "pencil", authzid="user")
    mech = server()
    first = mech.start(ok.first())
    assert isinstance(first, Challenge)
    assert isinstance(mech.step(ok.final(first.data)), Challenge)
    other = ScramClient("user", "pencil", authzid="admin")
    assert isinstance(server().start(other.first()), BadCredentials)


def test_y_flag_accepted_channel_binding_refused() -> None:
    assert isinstance(server().start(b"y,,n=user,r=abc"), Challenge)
    result = server().start(b"p=tls-unique,,n=user,r=abc")
    assert isinstance(result, BadCredentials)


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"n,,",
        b"x,,n=user,r=abc",
        b"n,,r=abc,n=user",
        b"n,,m=ext,n=user,r=abc",  # reserved-mext must fail (RFC 5802 §7)
        b"n,,n=us=er,r=abc",  # "=" must be =3D or =2C
        b"n,,n=user,r=a,b",
        b"n,,n=user,r=",
        b"n,x,n=user,r=abc",
        b"\xff\xfe",
    ],
)
def test_malformed_client_first(message: bytes) -> None:
    assert isinstance(server().start(message), Malformed)


def test_client_final_checks() -> None:
    def run(final: bytes) -> object:
        mech = server()
        mech.start(CLIENT_FIRST)
        return mech.step(final)

    nonce = b"rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    proof = b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    assert isinstance(run(b"c=biws,r=" + nonce + b"X," + proof), BadCredentials)  # nonce
    bad_cb = base64.b64encode(b"y,,")
    assert isinstance(run(b"c=" + bad_cb + b",r=" + nonce + b"," + proof), BadCredentials)
    assert isinstance(run(b"c=biws,r=" + nonce), Malformed)  # no proof
    assert isinstance(run(b"c=biws,r=" + nonce + b",p=!!!"), Malformed)
    assert isinstance(run(b"c=biws,r=" + nonce + b",p=AAAA"), BadCredentials)  # short proof
    assert isinstance(run(b"r=" + nonce + b",c=biws," + proof), Malformed)


def test_nothing_after_success() -> None:
    mech = server()
    mech.start(CLIENT_FIRST)
    mech.step(CLIENT_FINAL)
    assert isinstance(mech.step(b"not empty"), Malformed)
