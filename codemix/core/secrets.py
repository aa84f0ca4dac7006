"""Passwords in storage URLs: never printed, never stored.

URLs are split by hand rather than with urllib or SQLAlchemy, which both stop the password
at its first '@' (or '/') and would print the rest: the credentials are everything between
'://' and the last '@' before the host, the password everything after the user's ':'.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

MASK = "***"


def split_credentials(url: str) -> tuple[str, str | None, str | None, str]:
    """(scheme://, user, password, host-and-rest); user and password as written (escaped)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url, None, None, ""
    userinfo, _, host = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return scheme + sep, user, password if colon else None, host


def redact(url: str) -> str:
    """postgresql://user:s3@cr:t@host/db -> postgresql://user:***@host/db"""
    head, user, password, host = split_credentials(url)
    if password is None:
        return url
    return f"{head}{user}:{MASK}@{host}"


def scrub(text: str, url: str) -> str:
    """`text` (an error message, say) with every form of the URL's password masked where it
    stands alone, not inside a longer word: masked everywhere, a one-letter password 'p'
    turned the driver's 'psycopg' into '***sycopg'."""
    _, _, password, _ = split_credentials(url)
    if not password:
        return text
    for form in sorted({password, unquote(password), quote(unquote(password), safe="")}, key=len)[
        ::-1
    ]:
        if form:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(form)}(?![A-Za-z0-9])", MASK, text)
    return text


def normalise(url: str) -> str:
    """The URL with its password percent-escaped once, so a raw '@', ':' or '/' in it works
    (database drivers read the password only up to the first such character)."""
    head, user, password, host = split_credentials(url)
    if password is None:
        return url
    return f"{head}{user}:{quote(unquote(password), safe='')}@{host}"
