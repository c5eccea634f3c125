"""Whose inbox an accepted message enters."""

from schemas.envelopes import MessageEnvelope
from schemas.ids import direct_members, notification_members


def inbox_users(envelope: MessageEnvelope) -> list[str]:
    """Users whose inbox receives ``envelope``: both members of a direct conversation (the
    sender's own inbox feeds its other devices); the user of a notification conversation."""
    members = direct_members(envelope.conversation) or notification_members(envelope.conversation)
    if members is None:
        raise ValueError(f"no members known for conversation {envelope.conversation!r}")
    return sorted(set(members))
