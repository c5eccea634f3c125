"""End-to-end encryption for Courier clients, on vodozemac (Olm pairwise, Megolm for groups).

``machine.OlmMachine`` holds a device's keys and sessions and turns plaintext into the bodies
and payloads of a ``send`` and back, with no I/O; ``client.e2ee.SecureClient`` drives it over a
``CourierClient`` (key directory calls, sends, receives). ``wire`` is what the ciphertext and
the plaintext inside it look like; ``state`` persists the machine; ``verify`` computes safety
numbers. See docs/e2ee.md.
"""

from client.crypto.machine import Decrypted, OlmMachine, RotationPolicy, Undecryptable

__all__ = ["Decrypted", "OlmMachine", "RotationPolicy", "Undecryptable"]
