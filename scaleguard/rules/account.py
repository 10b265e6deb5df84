"""Whether an entry of a private key's ACL names a service's logon account.

Windows compares accounts by SID: a name without a domain (``SSISScaleOutWorker150``) resolves to the
same account as ``NT Service\\SSISScaleOutWorker150``, two names that both carry a domain are the same
only when equal (``CONTOSO\\svc`` is not ``FABRIKAM\\svc``), and LocalSystem goes by several names.
Broad groups (Everyone, Users, ...) give every account read access: they count for "can the account read
the key" but never when one account's grant is revoked.
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
    name, wanted = reader.strip().lower(), account.strip().lower()
    if name in _SYSTEM_NAMES and wanted in _SYSTEM_NAMES:
        return True
    if "\\" in name and "\\" in wanted:
        return name == wanted
    return name.rsplit("\\", 1)[-1] == wanted.rsplit("\\", 1)[-1]


def readers_for(account: str) -> list[str]:
    """Every lower-case ACL entry through which ``account`` can read a key: its names and broad groups."""
    return list(dict.fromkeys([*account_names(account), *BROAD_READERS]))
