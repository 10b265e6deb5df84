"""Whether an entry of a private key's ACL names a service's logon account.

Windows compares accounts by SID: a name without a domain (``SSISScaleOutWorker150``) resolves to the
same account as ``NT Service\\SSISScaleOutWorker150``, two names that both carry a domain are the same
only when equal (``CONTOSO\\svc`` is not ``FABRIKAM\\svc``), and LocalSystem goes by several names.
Broad groups (Everyone, Users, ...) give every account read access: they count for "can the account read
the key" but never when one account's grant is revoked. LocalSystem, LocalService and NetworkService are
one account each whether written by name, as ``NT AUTHORITY\\...`` or as their SIDs (S-1-5-18/19/20).

A plan may grant a key only to an account a worker service can log on as (:func:`worker_account_problem`).
"""

from __future__ import annotations

BROAD_READERS = (
    "everyone",
    "builtin\\users",
    "users",
    "nt authority\\authenticated users",
    "authenticated users",
    "nt service\\all services",
)
_SYSTEM_NAMES = ("localsystem", "nt authority\\system", "system", ".\\localsystem")


def account_names(account: str) -> list[str]:
    """The lower-case names an ACL entry may use for ``account`` itself (what a policy can test with
    ``in``; an entry in another domain's name for an account given without one is not among them)."""
    full = account.strip().lower()
    names = [full, full.rsplit("\\", 1)[-1]]
    if full in _SYSTEM_NAMES:
        names += _SYSTEM_NAMES
    return list(dict.fromkeys(names))


def account_matches(reader: str, account: str) -> bool:
    """True when the ACL entry ``reader`` is a grant to ``account`` itself (not to a group)."""
    name, wanted = canonical(reader), canonical(account)
    if name == wanted:
        return True
    if "\\" in name and "\\" in wanted or name.startswith("s-1-") or wanted.startswith("s-1-"):
        return False
    return name.rsplit("\\", 1)[-1] == wanted.rsplit("\\", 1)[-1]


def readers_for(account: str) -> list[str]:
    """Every lower-case ACL entry through which ``account`` can read a key: its names and broad groups."""
    return list(dict.fromkeys([*account_names(account), *BROAD_READERS]))


_WELL_KNOWN = {
    "s-1-5-18": "s-1-5-18",
    "localsystem": "s-1-5-18",
    "system": "s-1-5-18",
    "nt authority\\system": "s-1-5-18",
    "s-1-5-19": "s-1-5-19",
    "localservice": "s-1-5-19",
    "local service": "s-1-5-19",
    "nt authority\\localservice": "s-1-5-19",
    "nt authority\\local service": "s-1-5-19",
    "s-1-5-20": "s-1-5-20",
    "networkservice": "s-1-5-20",
    "network service": "s-1-5-20",
    "nt authority\\networkservice": "s-1-5-20",
    "nt authority\\network service": "s-1-5-20",
}
_SERVICE_PREFIX = "ssisscaleoutworker"
_GROUP_DOMAINS = ("builtin", "nt authority", "nt service", "nt virtual machine", "window manager", "font driver host")
_GROUP_NAMES = frozenset(
    {
        "everyone",
        "authenticated users",
        "users",
        "guests",
        "administrators",
        "domain users",
        "domain computers",
        "domain guests",
        "domain admins",
        "enterprise admins",
        "interactive",
        "anonymous logon",
        "network",
        "service",
        "batch",
        "creator owner",
    }
)
_FORBIDDEN_CHARS = frozenset('"/[]:;|=,+*?<>')
MAX_LENGTH = 104


def canonical(account: str) -> str:
    """One spelling per identity (lower case; well-known accounts as their SID; ``NT Service\\X`` for
    a bare virtual-account name ``SSISScaleOut...``)."""
    name = account.strip().lower()
    if name.startswith(".\\"):
        name = name[2:]
    if name in _WELL_KNOWN:
        return _WELL_KNOWN[name]
    if "\\" not in name and name.startswith("ssisscaleout"):
        return f"nt service\\{name}"
    return name


def worker_account_problem(account: str) -> str | None:
    """Why ``account`` cannot be the Scale Out Worker service's logon account, or None when it can be.

    A service logs on as one user: the worker's virtual account, one of the three built-in service
    accounts, or a local/domain user (``DOMAIN\\user``, ``.\\user``, ``user@domain``, a gMSA ``DOMAIN\\name$``).
    Groups and other principals (``Everyone``, ``BUILTIN\\Users``, ``Authenticated Users``) never are.
    """
    text = account.strip()
    if not text or len(text) > MAX_LENGTH or text != account:
        return "is not an account name"
    if any(ord(ch) < 32 or ch in _FORBIDDEN_CHARS for ch in text):
        return "contains characters no account name has"
    name = canonical(text)
    if name in ("s-1-5-18", "s-1-5-19", "s-1-5-20"):
        return None
    if name.startswith("s-1-"):
        return "is a SID other than LocalSystem, LocalService or NetworkService"
    if text.startswith(".\\"):
        return None if name and "\\" not in name and name not in _GROUP_NAMES else "is not a local user account"
    if "@" in name:
        user, _, domain = name.partition("@")
        return None if user and domain and "\\" not in name and "@" not in domain else "is not an account name"
    if "\\" not in name:
        return "names no domain or computer (a worker service account is DOMAIN\\user or a service account)"
    domain, _, user = name.partition("\\")
    if not domain or not user or "\\" in user:
        return "is not an account name"
    if domain == "nt service":
        if user.startswith(_SERVICE_PREFIX) and user[len(_SERVICE_PREFIX) :].isdigit():
            return None
        return "is a virtual account of another service than the Scale Out Worker"
    if domain in _GROUP_DOMAINS:
        return "is a group or a built-in principal, not a service logon account"
    if user in _GROUP_NAMES:
        return "is a group, not a service logon account"
    return None

WELL_KNOWN_NAMES = tuple(name for name in _WELL_KNOWN if not name.startswith("s-1-"))
"""The built-in service accounts' names (actions.ps1 maps the same names to the same SIDs, because
``NTAccount('LocalSystem').Translate()`` throws on Windows; a test keeps the two tables equal)."""
