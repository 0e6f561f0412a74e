"""Credentials: taken from the environment, never printed or written.

params.yaml is committed, pushed and shown by `dvc params diff`, so it is no place for a secret.
A site URL may instead name environment variables, `https://${CAT_USER}:${CAT_PASSWORD}@host/`,
which `expand_env` fills in when the source starts. What the stage prints or writes (console,
manifest origins and reasons, errors) goes through `redact`: a URL's user and password, the
values of well-known secret query parameters and the values taken from the environment are
replaced, so that no secret reaches data/raw (which `dvc push` sends away) or a log.
"""

from __future__ import annotations

import os
import re
import urllib.parse

from imgclf.core.errors import StageError

REDACTED = "REDACTED"
# Query parameters that carry secrets (compared without case): API keys, OAuth tokens, passwords,
# and the signatures and credentials of pre-signed S3, Google Cloud and Azure URLs.
SECRET_PARAMETERS = frozenset({
    "token", "access_token", "refresh_token", "id_token", "auth", "auth_token", "authorization",
    "key", "api_key", "apikey", "api-key", "secret", "client_secret", "password", "passwd", "pwd",
    "sig", "signature", "session", "sessionid", "x-amz-signature", "x-amz-credential",
    "x-amz-security-token", "x-goog-signature", "x-goog-credential", "key-pair-id", "policy",
})
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
USERINFO = re.compile(r"//[^/?#@]*@")
# Values expanded from the environment in this process, and the reference they replaced.
_from_environment: dict[str, str] = {}


def expand_env(key: str, text: str) -> str:
    """`text` with each `${NAME}` replaced by the environment variable NAME."""
    def value(match: re.Match[str]) -> str:
        name = match[1]
        if name not in os.environ:
            raise StageError(f"{key}: needs the environment variable {name}, which is not set")
        if os.environ[name]:
            _from_environment[os.environ[name]] = match[0]
        return os.environ[name]
    return ENV_REFERENCE.sub(value, text)


def _redact_pairs(text: str) -> str:
    """`a=1&token=x` -> `a=1&token=REDACTED`; other pairs are left byte for byte."""
    pairs = []
    for pair in text.split("&"):
        name, equals, _ = pair.partition("=")
        secret = equals and urllib.parse.unquote_plus(name).strip().lower() in SECRET_PARAMETERS
        pairs.append(f"{name}={REDACTED}" if secret else pair)
    return "&".join(pairs)


def _hide_environment(text: str) -> str:
    for secret, reference in _from_environment.items():
        text = text.replace(secret, reference)
    return text


def redact_url(url: str) -> str:
    """`url` without its user and password, with secret query (or fragment) values and values
    from the environment hidden."""
    url = _hide_environment(url)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # a broken IPv6 literal: still hide what may be a user and password
        return USERINFO.sub(f"//{REDACTED}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    redacted = parts._replace(netloc=netloc, query=_redact_pairs(parts.query),
                              fragment=_redact_pairs(parts.fragment))
    return urllib.parse.urlunsplit(redacted) if redacted != parts else url


def redact(text: str) -> str:
    """`text` (a message, a reason) with every URL in it redacted and no value from the
    environment left in it."""
    return URL_IN_TEXT.sub(lambda match: redact_url(match[0]), _hide_environment(text))
