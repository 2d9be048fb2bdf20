"""Credential-shaped test values, made at run time so that no token-like literal is committed.

Secret scanners (and people) cannot tell a committed fake from a leaked real token; values that
only exist while the tests run have the right shapes for the checks and nothing to scan for.
"""

from __future__ import annotations

import secrets
import string

_ALNUM = string.ascii_letters + string.digits


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def hugging_face_token() -> str:
    """hf_ and 34 letters and digits, the shape of a Hugging Face access token."""
    return "hf_" + _random(_ALNUM, 34)


def aws_access_key_id() -> str:
    return "AKIA" + _random(string.ascii_uppercase + string.digits, 16)


def aws_secret_access_key() -> str:
    return _random(_ALNUM + "/+", 40)
