"""NATS user nkeys: the public key of a seed, checked to be a user's."""

import nkeys


def user_public_key(seed: bytes) -> str:
    """The public key (``U...``) of a user seed (``SU...``); ``ValueError`` if it is not one."""
    try:
        key: bytes = nkeys.from_seed(bytearray(seed.strip())).public_key
    except (nkeys.NkeysError, ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"not an nkey seed ({type(exc).__name__})") from None
    if not key.startswith(b"U"):
        raise ValueError("not a user nkey seed (a user seed starts with SU)")
    return key.decode()
