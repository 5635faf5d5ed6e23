"""The one place that hides secrets in what we print or log: every URL goes through `mask_url`.

A Redis or PostgreSQL URL may carry a password (`redis://:pw@host`, `postgresql://user:pw@host/db`,
`?password=pw`); logs, banners and `squad status` are read by people and shipped to log stores
that must never receive it. Free text that may contain URLs (a library's banner, an error
message) goes through `mask_text`.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit, urlunsplit

__all__ = ["MASK", "mask_text", "mask_url", "misplaced_userinfo", "url_secrets"]

MASK = "***"
_SECRET_PARAMS = frozenset({"password", "pass", "pwd", "token", "secret"})
# scheme://user:password@  (the password may itself hold '@', '/', '#' or '?' when it was not
# percent-encoded: the last '@' of the URL ends it — more hidden rather than half a password shown)
_USERINFO_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)(\S+)@")
# ?key=value: the key is compared after percent-decoding (`?%74oken=` is `?token=` to a server)
_PARAM_RE = re.compile(r"([?&;])([^=&;?#\s]+)=([^&\s#]+)")


def _secret_key(key: str) -> bool:
    return unquote_plus(key).strip().lower() in _SECRET_PARAMS


def _mask_params(text: str) -> str:
    return _PARAM_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}={MASK}" if _secret_key(m.group(2)) else m.group(0),
                         text)


def misplaced_userinfo(url: str) -> bool:
    """True when an `@` follows the URL's host part: a password holding `/`, `#` or `?` that was not
    percent-encoded, so a URL parser takes the password's tail for the host (`redis://:p#w@host`
    names host `p`... of the password)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return "@" in parts.path or "@" in parts.query or "@" in parts.fragment


def mask_url(url: str) -> str:
    """`url` with its password (user info or a `password=` query parameter) replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL we can parse: mask whatever looks like a secret in it
        return mask_text(url)
    if misplaced_userinfo(url):  # the password runs to the last '@': hide all of it, whatever parsers say
        return mask_text(url)
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if colon and password:
            netloc = f"{user}:{MASK}@{hostport}"
    query = parts.query
    if query:
        query = _mask_params("?" + query)[1:]
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing to hide: keep it exactly as written (urlunsplit would drop "//" of sqlite:///)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_text(text: str) -> str:
    """Free text with the password of every URL in it (and `password=` parameters) masked."""
    return _mask_params(_USERINFO_RE.sub(lambda m: m.group(1) + MASK + "@", text))


def url_secrets(url: str | None) -> set[str]:
    """The secrets a URL carries (its password, `password=` values), for scrubbing environments."""
    if not url:
        return set()
    try:
        parts = urlsplit(url)
    except ValueError:
        return set()
    found: set[str] = set()
    netloc = url.split("://", 1)[-1] if misplaced_userinfo(url) else parts.netloc
    userinfo, at, _ = netloc.rpartition("@")
    if at:
        _, colon, password = userinfo.partition(":")
        if colon and password:
            found.update({password, unquote(password)})
    for key, value in parse_qsl(parts.query, keep_blank_values=False):
        if _secret_key(key) and value:
            found.add(value)
    return found
