"""The one error an inventory reader raises, whatever the format (native YAML or Ansible)."""


class InventoryError(ValueError):
    """The inventory cannot be used; the message lists every problem as ``file:line: what``."""
