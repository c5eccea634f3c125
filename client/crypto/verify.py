"""Safety numbers: two users read out (or scan) the same 60 digits when each sees the other's
devices with the keys the other really has. The number is a digest of both users' ids and the
Ed25519 keys of all their devices, each side's in a fixed order, so it is the same on both
ends and changes when any device key changes (a new device of either user changes it too).
"""

import hashlib
from collections.abc import Iterable

#: Iterations of the digest (as Signal's safety numbers): costly to search for a collision.
ITERATIONS = 5200


def _fingerprint(user: str, ed25519_keys: Iterable[str]) -> str:
    digest = hashlib.sha512(("\x00".join((user, *sorted(ed25519_keys)))).encode()).digest()
    for _ in range(ITERATIONS):
        digest = hashlib.sha512(digest + user.encode()).digest()
    # 30 digits: six 5-digit groups, each from 5 bytes of the digest.
    return "".join(f"{int.from_bytes(digest[i:i + 5], 'big') % 100_000:05d}"
                   for i in range(0, 30, 5))


def safety_number(user_a: str, keys_a: Iterable[str], user_b: str,
                  keys_b: Iterable[str]) -> str:
    """The 60-digit safety number of two users, in 12 groups of 5 (the same whichever user
    is ``a``)."""
    first, second = sorted(((user_a, list(keys_a)), (user_b, list(keys_b))))
    digits = _fingerprint(*first) + _fingerprint(*second)
    return " ".join(digits[i:i + 5] for i in range(0, 60, 5))
