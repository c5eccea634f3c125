"""The ``app_users`` storage RPC: page through the users of an app (broadcast fan-out).

A separate, optional interface rather than a ``MessageStore`` method: a backend lists an app's
users only if it keeps an index for it. A store without ``app_users`` answers
``unavailable`` (broadcasts fail with a typed error; everything else keeps working).
"""

from typing import Protocol, runtime_checkable

from runtime.rpc import Handler
from schemas.errors import ErrorCode, ProtocolError
from schemas.notifications import AppUsers, AppUsersRequest

#: Largest page a caller may ask for.
MAX_PAGE = 10_000


@runtime_checkable
class AppUserListing(Protocol):
    """A store that can list the users of an app."""

    async def app_users(self, app: str, after: str, limit: int) -> list[str]:
        """Up to ``limit`` distinct users with at least one device registered for ``app``,
        in ascending id order, each greater than ``after`` ("" for the first page)."""


def app_users_handler(store: object) -> Handler:
    """The RPC handler for ``store``."""

    async def handle(request: AppUsersRequest) -> AppUsers:
        if not isinstance(store, AppUserListing):
            raise ProtocolError(ErrorCode.UNAVAILABLE,
                                "this store backend cannot list the users of an app")
        if not 1 <= request.limit <= MAX_PAGE:
            raise ProtocolError(ErrorCode.INVALID, f"limit must be within [1, {MAX_PAGE}]")
        users = await store.app_users(request.app, request.after, request.limit)
        return AppUsers(users=users, more=len(users) == request.limit)

    return handle
