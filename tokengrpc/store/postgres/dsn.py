"""Database URLs: which engine one names, and how to print one without its password."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

SCHEMES = ("postgresql", "postgres")


class BadDatabaseUrl(ValueError):
    """A ``--database`` value that is neither empty nor a PostgreSQL URL."""


def is_postgres(url: str) -> bool:
    """True for a PostgreSQL URL, False for empty (SQLite); anything else is refused."""
    if not url:
        return False
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in SCHEMES:
        return True
    raise BadDatabaseUrl(
        "--database / TOKENGRPC_DATABASE_URL must be empty (SQLite in the data dir) or a"
        " postgresql:// URL"
    )


def has_password(url: str) -> bool:
    """Whether the URL itself carries a password (rather than PGPASSWORD or ~/.pgpass)."""
    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return ":" in urlsplit(url).netloc.rpartition("@")[0]


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{name}:***@{host}"))


def scrub(text: str, url: str) -> str:
    """``text`` with the URL's password (raw or percent-decoded) cut out wherever it occurs."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        for form in {password, unquote(password)}:
            text = text.replace(form, "***")
    return text.replace(url, redacted(url))
