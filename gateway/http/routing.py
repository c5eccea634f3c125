"""How a REST route is declared, admitted and served: the machinery under the route table
(``gateway.http.routes``).

A ``Route`` says everything about one operation once: method, path, handler, the credential
it takes, its parameters, request and reply types, the problem statuses it answers, the module
whose disabling refuses it and the rate-limit bucket it spends. ``serve`` turns the table into
aiohttp routes, ``gateway.http.openapi`` into the OpenAPI ``paths``; nothing else lists routes.

The wrapper ``serve`` puts around each handler admits the request before the handler runs:

1. the credential: a device token (verified into an ``Identity``), the service or the admin
   secret (``SERVICE``, ``ADMIN``), or none;
2. on device routes, the disabled guard: the device, its user and the route's module;
3. the route's rate-limit bucket (``gateway.handlers.limits``): per user on device routes,
   per source address for ``registration``;
4. the query: a parameter the route does not declare is ``invalid`` (as an unknown body
   field is);
5. the request body, read within the route's limit and decoded strictly into its type.

A handler therefore never reads the bearer itself: it is a method that takes the request, the
principal (except on open routes) and the decoded body (only on routes with one), in that
order, with those annotations; a declaration whose handler does not match is refused when the
table is built, as is a device route without a module or a bucket. Handlers parse what is left
(query and path parameters, through the ``Param`` objects the route lists), call one function
and encode.

The WebSocket upgrade is the one route served as is (``upgrade``): its endpoint takes the
token from the header or the ``token`` query and applies the guard and its own limits before
upgrading (``gateway.ws.sockets``).
"""

import functools
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, get_args, get_type_hints

import msgspec
from aiohttp import web
from prometheus_client import Counter

from gateway.auth import Identity, TokenVerifier
from gateway.handlers.control import ControlGuard
from gateway.handlers.limits import Limits
from gateway.http.credentials import bearer, read_json, require_secret
from runtime.config import AuthConfig, Config
from schemas.bounds import MAX_INT
from schemas.errors import ErrorCode, ProtocolError
from schemas.ids import ID_PATTERN

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
#: What a route authenticates with: a device token, the service secret, the admin secret, or
#: nothing.
Credential = Literal["device", "service", "admin", "none"]
#: The rate-limit bucket a route spends: the user's ``read`` or ``write`` budget (group
#: creations and contact requests also their own), or the source address's ``registration``.
Bucket = Literal["read", "write", "group_create", "contact_request", "registration"]
#: Success and problem statuses a route may declare.
STATUSES: Final = frozenset({101, 200, 201, 204, 400, 401, 403, 404, 409, 413, 422, 429, 503})
DEFAULT_BODY_LIMIT: Final = 16 * 1024
REQUESTS = Counter("courier_gateway_rest_requests_total",
                   "REST requests by operation and outcome (ok, or the problem code)",
                   ["operation", "outcome"])


class Service(msgspec.Struct, frozen=True):
    """The caller presented the service secret (``COURIER_AUTH_SERVICE_SECRET``)."""


class Admin(msgspec.Struct, frozen=True):
    """The caller presented the admin secret (``COURIER_AUTH_ADMIN_SECRET``)."""


SERVICE: Final = Service()
ADMIN: Final = Admin()
Principal = Identity | Service | Admin
_PRINCIPALS: Final[dict[Credential, type[Principal] | None]] = {
    "device": Identity, "service": Service, "admin": Admin, "none": None}
_SECRETS: Final[dict[Credential, str]] = {"service": "COURIER_AUTH_SERVICE_SECRET",
                                          "admin": "COURIER_AUTH_ADMIN_SECRET"}


class RouteError(ValueError):
    """A route declaration that the table refuses."""


# ---------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Param:
    """A query or path parameter: its OpenAPI description and its parser, in one object, so
    what the document promises is what the handler enforces."""

    name: str
    description: str
    where: Literal["query", "path"] = "query"

    @property
    def required(self) -> bool:
        return self.where == "path"

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def openapi(self) -> dict[str, Any]:
        return {"name": self.name, "in": self.where, "required": self.required,
                "description": self.description, "schema": self.schema()}

    def raw(self, request: web.Request) -> str | None:
        if self.where == "path":
            return request.match_info[self.name]
        return request.query.get(self.name)

    @property
    def what(self) -> str:
        return f"{self.where} '{self.name}'"


@dataclass(frozen=True)
class IntParam(Param):
    """An integer within [low, high] (``schemas.bounds.MAX_INT`` unless tighter); absent
    (queries only) it is ``default``."""

    low: int = 0
    high: int = MAX_INT
    default: int | None = None

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer", "minimum": self.low, "maximum": self.high}
        if self.default is not None:
            schema["default"] = self.default
        return schema

    def optional(self, request: web.Request) -> int | None:
        """The value, or None when the query is absent."""
        raw = self.raw(request)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise ProtocolError(ErrorCode.INVALID, f"{self.what} must be an integer") from None
        if not self.low <= value <= self.high:
            raise ProtocolError(ErrorCode.INVALID,
                                f"{self.what} must be within [{self.low}, {self.high}]")
        return value

    def value(self, request: web.Request) -> int:
        """The value, or the default when absent (a path segment is never absent)."""
        value = self.optional(request)
        if value is None:
            if self.default is None:
                raise ProtocolError(ErrorCode.INVALID, f"{self.what} is required")
            return self.default
        return value


@dataclass(frozen=True)
class IdParam(Param):
    """A string matching ``pattern`` (by default the id rule of users, groups, devices)."""

    pattern: str = ID_PATTERN
    label: str = ""

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": self.pattern}

    def value(self, request: web.Request) -> str:
        raw = self.raw(request)
        if raw is None:
            raise ProtocolError(ErrorCode.INVALID, f"{self.what} is required")
        if not re.fullmatch(self.pattern, raw):
            raise ProtocolError(ErrorCode.INVALID,
                                f"{self.label or self.name} {raw!r} is not a valid id")
        return raw


@dataclass(frozen=True)
class IdListParam(Param):
    """A required query of 1 to ``most`` comma-separated ids."""

    most: int = 1

    def schema(self) -> dict[str, Any]:
        item = ID_PATTERN.removeprefix("^").removesuffix("$")
        return {"type": "string", "pattern": f"^{item}(,{item}){{0,{self.most - 1}}}$"}

    @property
    def required(self) -> bool:
        return True

    def value(self, request: web.Request) -> list[str]:
        items = [item for item in (self.raw(request) or "").split(",") if item]
        if not items or len(items) > self.most:
            raise ProtocolError(ErrorCode.INVALID, f"{self.what}: 1 to {self.most} "
                                                   "comma-separated user ids")
        for item in items:
            if not re.fullmatch(ID_PATTERN, item):
                raise ProtocolError(ErrorCode.INVALID, f"{self.name} {item!r} is not a valid id")
        return items


# ---------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Reply:
    """A response other than a problem: its status, and the type of its body (None: none)."""

    status: int
    description: str
    body: Any = None
    media: str = "application/json"


Handler = Callable[..., Awaitable[web.StreamResponse]]


@dataclass(frozen=True, kw_only=True)
class Route:
    """One REST operation, declared once. Checked when declared (``RouteError``)."""

    method: Method
    path: str
    #: A method of a handler class (``SocialRest.create_group``); bound by ``serve``.
    handler: Handler
    credential: Credential
    summary: str
    replies: tuple[Reply, ...]
    description: str = ""
    #: Type of the JSON request body (decoded by the wrapper, handed to the handler).
    body: Any = None
    #: Largest body in bytes: a number, or what configuration says.
    body_limit: int | Callable[[Config], int] = DEFAULT_BODY_LIMIT
    params: tuple[Param, ...] = ()
    #: Problem statuses the handler answers; the table adds those of its own checks.
    problems: tuple[int, ...] = ()
    #: Device routes: the module whose disabling (like the device's or its user's) refuses
    #: the route with 403 ``disabled``.
    module: str | None = None
    bucket: Bucket | None = None
    #: The WebSocket upgrade: served by its handler alone, which reads its own query and
    #: applies its own checks (the table adds none); the contract tests leave it out.
    upgrade: bool = False
    #: Filled in by the check: the statuses the table's own checks add.
    admission: tuple[int, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        try:
            self._check()
        except RouteError as exc:
            raise RouteError(f"{self.method} {self.path}: {exc}") from None

    @property
    def queries(self) -> frozenset[str]:
        """The query parameters the route takes; any other is refused (422 ``invalid``)."""
        return frozenset(param.name for param in self.params if param.where == "query")

    @property
    def guarded(self) -> bool:
        """Whether disabled devices, users and the route's module are refused."""
        return self.module is not None

    @property
    def operation_id(self) -> str:
        return self.handler.__qualname__

    def statuses(self) -> list[int]:
        """Every problem status, sorted."""
        return sorted({*self.problems, *self.admission})

    def _check(self) -> None:
        if self.credential not in get_args(Credential):
            raise RouteError(f"credential must be one of {get_args(Credential)}, "
                             f"not {self.credential!r}")
        if self.method not in get_args(Method):
            raise RouteError(f"unknown method {self.method!r}")
        if not self.path.startswith("/"):
            raise RouteError("a path starts with '/'")
        if not self.replies or not (self.replies[0].status == 101
                                    or 200 <= self.replies[0].status < 300):
            raise RouteError("the first reply is the success reply (1xx or 2xx)")
        if self.bucket is not None and self.bucket not in get_args(Bucket):
            raise RouteError(f"unknown bucket {self.bucket!r}")
        self._check_guard_and_bucket()
        path_names = re.findall(r"\{([^}/]+)\}", self.path)
        declared = [p.name for p in self.params if p.where == "path"]
        if sorted(path_names) != sorted(declared):
            raise RouteError(f"path parameters {path_names} but {declared} declared")
        if len({(p.where, p.name) for p in self.params}) != len(self.params):
            raise RouteError("a parameter is declared twice")
        admission = {*([401] if self.credential != "none" else []),
                     *([403] if self.guarded else []),
                     *([429] if self.bucket is not None else []),
                     *([422] if not self.upgrade else []),  # an unknown query, at least
                     *([400, 413] if self.body is not None else [])}
        unknown = {*self.problems, *(r.status for r in self.replies)} - STATUSES
        if unknown:
            raise RouteError(f"statuses {sorted(unknown)} are not ones the API uses")
        object.__setattr__(self, "admission", tuple(sorted(admission)))
        self._check_handler()

    def _check_guard_and_bucket(self) -> None:
        if self.credential == "device":
            if self.module is None:
                raise RouteError("a device route refuses disabled devices, users and a "
                                 "module: name its module")
            if self.bucket is None or self.bucket == "registration":
                raise RouteError("a device route spends a user bucket: name it")
            if (self.bucket == "read") != (self.method == "GET"):
                raise RouteError("GET spends the 'read' bucket, every other method a write one")
            return
        if self.module is not None:
            raise RouteError("only device routes have a disabled guard (a module)")
        if self.bucket is not None and (self.credential, self.bucket) != ("none",
                                                                          "registration"):
            raise RouteError(f"a {self.credential} route spends no user bucket")

    def _check_handler(self) -> None:
        """The handler takes (self, request[, principal][, body]) with those annotations."""
        if "." not in self.handler.__qualname__:
            raise RouteError("the handler is a method of a handler class")
        names = list(inspect.signature(self.handler).parameters)[1:]
        hints = get_type_hints(self.handler)
        principal = _PRINCIPALS[self.credential]
        expected: list[Any] = [web.Request, *([principal] if principal else []),
                               *([self.body] if self.body is not None else [])]
        got = [hints.get(name) for name in names]
        if got != expected:
            raise RouteError(f"handler {self.operation_id} takes {got}, the declaration says "
                             f"{expected} (request, principal of a {self.credential!r} "
                             "route, body)")


# ---------------------------------------------------------------------- serving


class Admits(Protocol):
    """What ``serve`` puts before every handler (``Admission`` on the gateway)."""

    def admit(self, route: Route, request: web.Request) -> Principal | None:
        """The request's principal once every check of ``route`` passed, or the problem."""


class Admission:
    """The checks before a handler: credential, disabled guard, rate limit."""

    def __init__(self, verifier: TokenVerifier, guard: ControlGuard, limits: Limits,
                 auth: AuthConfig) -> None:
        self._verifier = verifier
        self._guard = guard
        self._limits = limits
        self._secrets: dict[Credential, str] = {"service": auth.service_secret,
                                                "admin": auth.admin_secret}

    def admit(self, route: Route, request: web.Request) -> Principal | None:
        """The request's principal once every check of ``route`` passed, or the problem."""
        if route.credential == "device":
            return self._device(route, request)
        if route.credential in _SECRETS:
            require_secret(request, self._secrets[route.credential],
                           _SECRETS[route.credential])
            return SERVICE if route.credential == "service" else ADMIN
        if route.bucket == "registration":
            self._limits.check_registration(self._limits.address(request.headers,
                                                                 request.remote))
        return None

    def _device(self, route: Route, request: web.Request) -> Identity:
        assert route.module is not None and route.bucket is not None
        identity = self._verifier.verify(bearer(request))
        self._guard.check_connect(identity)
        self._guard.check_send(identity, route.module)
        if route.bucket == "read":
            self._limits.check_read(identity)
        elif route.bucket != "registration":
            self._limits.check_write(identity, route.bucket)
        return identity


def serve(routes: Iterable[Route], handlers: Iterable[object], admission: Admits,
          config: Config) -> list[web.RouteDef]:
    """The aiohttp routes of ``routes``, each handler bound to the one object of
    ``handlers`` whose class defines it, behind ``admission``."""
    objects = list(handlers)
    return [web.route(route.method, route.path,
                      _wrap(route, _owner(route, objects), admission, config))
            for route in routes]


def _owner(route: Route, objects: list[object]) -> object:
    owners = [obj for obj in objects
              if getattr(type(obj), route.handler.__name__, None) is route.handler]
    if len(owners) != 1:
        raise RouteError(f"{route.method} {route.path}: {len(owners)} objects serve "
                         f"{route.operation_id}, one must")
    return owners[0]


def _wrap(route: Route, owner: object, admission: Admits,
          config: Config) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    if route.upgrade:  # the socket endpoint admits its upgrades itself
        return functools.partial(route.handler, owner)
    limit = route.body_limit if isinstance(route.body_limit, int) else route.body_limit(config)
    queries = route.queries

    async def admitted(request: web.Request) -> web.StreamResponse:
        principal = admission.admit(route, request)
        unknown = sorted(set(request.query) - queries)
        if unknown:
            raise ProtocolError(ErrorCode.INVALID, f"unknown query parameter {unknown[0]!r}; "
                                f"this route takes {sorted(queries) or 'none'}")
        args: list[object] = [] if principal is None else [principal]
        if route.body is not None:
            args.append(await read_json(request, route.body, limit))
        return await route.handler(owner, request, *args)

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            response = await admitted(request)
        except ProtocolError as exc:
            REQUESTS.labels(route.operation_id, exc.code).inc()
            raise
        except Exception:
            REQUESTS.labels(route.operation_id, ErrorCode.INTERNAL).inc()
            raise
        REQUESTS.labels(route.operation_id, "ok").inc()
        return response

    handle.__name__ = handle.__qualname__ = route.operation_id
    return handle
