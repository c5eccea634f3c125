"""The end-to-end encryption key directory's storage interface (``KeyStore``). Every backend
implements it; the contract suite in ``tests/contract/test_key_contract.py`` runs the same
tests against each.

Per ``(app, user, device)``: the identity keys (immutable once stored), a set of one-time keys
and at most one fallback key. Signatures were checked before a call reaches the store; keys are
opaque strings here.

Contracts:

- ``put_identity`` stores a device's identity keys, or leaves the same ones in place; different
  identity keys for a device that has some raise ``IdentityConflict`` (nothing changes).
- ``add_one_time_keys`` adds keys (a key id already held is left as is: uploads replay) and
  returns the count held. ``set_fallback`` replaces the fallback key.
- ``claim`` removes and returns one one-time key of the device, atomically: two concurrent
  claims never return the same key. With none left it returns the fallback key (which stays,
  flagged ``fallback``), else None.
- ``remove_device`` drops the device's identity, one-time and fallback keys.
"""

from typing import Protocol

from schemas.keys import ClaimedKey, DeviceKeys, OneTimeKey


class IdentityConflict(Exception):
    """The device already published different identity keys."""


class KeyStore(Protocol):
    """Where the key directory lives (see the module docstring for each method's contract)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def put_identity(self, app: str, keys: DeviceKeys) -> None: ...

    async def identity(self, app: str, user: str, device: str) -> DeviceKeys | None: ...

    async def devices(self, app: str, user: str) -> list[DeviceKeys]:
        """The user's devices that published identity keys, by device id."""
        ...

    async def add_one_time_keys(self, app: str, user: str, device: str,
                                keys: list[OneTimeKey]) -> int: ...

    async def set_fallback(self, app: str, user: str, device: str, key: OneTimeKey) -> None: ...

    async def count(self, app: str, user: str, device: str) -> int:
        """One-time keys held for the device (the fallback key not counted)."""
        ...

    async def claim(self, app: str, user: str, device: str) -> ClaimedKey | None: ...

    async def remove_device(self, app: str, user: str, device: str) -> None: ...
