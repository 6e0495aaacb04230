"""Every route of the URL conf × the methods it answers × every persona × the objects it
takes, with each cell's expected answer computed from one short table of RULES.

The routes are read from ``django.urls.get_resolver()`` — the API router's routes, the
pages and their htmx partials — so a new route cannot slip through: a route that is
neither in POLICIES (what it needs) nor in EXCLUDED (why it is left to other tests)
fails ``test_every_route_is_classified`` and its own cell of the matrix.

The RULES follow DESIGN.md: a foreign object is 404, never 403 (existence must not
leak); a visible object without the right is 403; anonymous callers get 401 under
/api/ and the sign-in page elsewhere. Each cell also asserts that a refused request
(and every read) changes nothing, and that an allowed write really changed something —
otherwise a cell that "passes" might not have exercised the write at all.

The world (two organizations, the six personas, keys, groups, members, workflows,
actions, runs) is built once per module inside a transaction; every cell runs in a
savepoint that is rolled back. Building it per cell would cost more than the ~1,900
cells themselves.
"""

from __future__ import annotations

import enum
import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction
from django.http import HttpResponse
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.resolvers import RegexPattern, RoutePattern
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from secretsapp import services as secret_services
from secretsapp.models import (
    AuditAction,
    AuditEvent,
    Membership,
    OrganizationGroup,
    Role,
    SecretKey,
    SecretKeyGroupObjectPermission,
    SecretKeyUserObjectPermission,
)
from tests.conftest import PERSONA_NAMES, RESTRICTED_VALUE, TEAM_VALUE, http_action
from tests.factories import PASSWORD, MembershipFactory, OrganizationFactory
from workflows import runs, webhooks
from workflows import services as workflow_services
from workflows.models import Action, Run, Webhook, Workflow

FOREIGN_VALUE = "globex-value-Wx6!not-for-eyes"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
ANONYMOUS = "anonymous"

# --- The personas: who they are, as the rules see them -----------------------------------

ROLES = {
    "admin": Role.ADMIN,
    "member_use": Role.MEMBER,
    "member_manage": Role.MEMBER,
    "member_nothing": Role.MEMBER,
    "viewer": Role.VIEWER,
    "outsider": Role.ADMIN,  # of the other organization
}
ORGANIZATIONS = {name: "globex" if name == "outsider" else "acme" for name in PERSONA_NAMES}
USERNAMES = {
    "admin": "alice-admin",
    "member_use": "bob-use",
    "member_manage": "carol-manage",
    "member_nothing": "dave-nothing",
    "viewer": "erin-viewer",
    "outsider": "mallory-outsider",
}


@dataclass(frozen=True)
class KeySpec:
    organization: str
    access: str
    creator: str
    grants: dict[str, str] = field(default_factory=dict)


# The keys the world creates. The rules derive every persona's rights on them from
# DESIGN.md's permission rules and these specs, never from the app's own queries.
KEYS = {
    "restricted-key": KeySpec(
        "acme", "restricted", "admin", {"member_use": "use", "member_manage": "manage"}
    ),
    "team-key": KeySpec("acme", "team", "admin"),
    "foreign-key": KeySpec("globex", "restricted", "outsider"),
}


def key_rights(persona: str, key: str) -> tuple[bool, bool]:
    """(Use, Manage) by DESIGN.md: admins and the creator Manage, Manage implies Use,
    Team access gives every member Use, grants add Use or Manage — and viewers are
    capped at Use (README, "Viewers are capped at Use")."""
    spec = KEYS[key]
    if ORGANIZATIONS[persona] != spec.organization:
        return False, False
    role = ROLES[persona]
    grant = spec.grants.get(persona)
    manage = role == Role.ADMIN or (
        role != Role.VIEWER and (spec.creator == persona or grant == "manage")
    )
    use = manage or spec.access == "team" or grant is not None
    return use, manage


# --- The objects a route may take --------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    family: str
    name: str
    organization: str | None  # None: no such object (an unknown id)

    def __str__(self) -> str:
        return self.name


def _kinds(family: str, *names_and_organizations: tuple[str, str | None]) -> tuple[Kind, ...]:
    return tuple(Kind(family, name, organization) for name, organization in names_and_organizations)


KINDS: dict[str, tuple[Kind, ...]] = {
    "secret": _kinds(
        "secret",
        ("restricted-key", "acme"),
        ("team-key", "acme"),
        ("foreign-key", "globex"),
        ("unknown-key", None),
    ),
    "workflow": _kinds(
        "workflow",
        ("workflow", "acme"),
        ("keyed-workflow", "acme"),  # its steps reference restricted-key
        ("foreign-workflow", "globex"),
        ("unknown-workflow", None),
    ),
    "action": _kinds(
        "action",
        ("action", "acme"),
        ("action-elsewhere", "acme"),  # an action of another workflow of the same organization
        ("keyed-action", "acme"),  # an action of keyed-workflow
        ("foreign-action", "globex"),
        ("unknown-action", None),
    ),
    "run": _kinds("run", ("run", "acme"), ("foreign-run", "globex"), ("unknown-run", None)),
    "group": _kinds(
        "group", ("group", "acme"), ("foreign-group", "globex"), ("unknown-group", None)
    ),
    "member": _kinds(
        "member", ("member", "acme"), ("foreign-member", "globex"), ("unknown-member", None)
    ),
}
# The workflow each action belongs to, for routes that address an action through one.
ACTION_WORKFLOW = {
    "action": "workflow",
    "action-elsewhere": "second-workflow",
    "keyed-action": "keyed-workflow",
    "foreign-action": "foreign-workflow",
}
# Workflows whose steps reference a key, by the key: changing them needs Use on it.
WORKFLOW_KEYS = {"keyed-workflow": "restricted-key", "keyed-action": "restricted-key"}
# URL parameters of the pages, and the router's basenames of the API, by object family.
PAGE_PARAMETERS = {
    "secret_id": "secret",
    "workflow_id": "workflow",
    "action_id": "action",
    "run_id": "run",
}
API_BASENAMES = {
    "member": "member",
    "group": "group",
    "secret": "secret",
    "workflow": "workflow",
    "action": "action",
    "run": "run",
}

# --- What each route needs ---------------------------------------------------------------


class Need(enum.Enum):
    PUBLIC = "anyone: the credentials are in the body"
    REDIRECT = "anyone: it only redirects"
    MEMBER = "any member of the organization, viewers included"
    EDITOR = "admins and members, not viewers"
    ADMIN = "the organization's admins"
    USE = "Use on the key in the URL"
    MANAGE = "Manage on the key in the URL"


@dataclass(frozen=True)
class Allow:
    need: Need
    ok: int = 200  # the answer when allowed


PUBLIC, REDIRECT, MEMBER, EDITOR, ADMIN, USE, MANAGE = Need

# Every route of the project: DESIGN.md's REST contract table, and the pages (README,
# "Pages"). HEAD and OPTIONS of the API follow from these (see RULES).
POLICIES: dict[str, dict[str, Allow]] = {
    "api:token": {"POST": Allow(PUBLIC)},
    "api:whoami": {"GET": Allow(MEMBER)},
    "api:member-list": {"GET": Allow(MEMBER), "POST": Allow(ADMIN, 201)},
    "api:member-detail": {"GET": Allow(MEMBER), "PATCH": Allow(ADMIN), "DELETE": Allow(ADMIN, 204)},
    "api:group-list": {"GET": Allow(MEMBER), "POST": Allow(ADMIN, 201)},
    "api:group-detail": {"GET": Allow(MEMBER), "PATCH": Allow(ADMIN), "DELETE": Allow(ADMIN, 204)},
    "api:secret-list": {"GET": Allow(MEMBER), "POST": Allow(EDITOR, 201)},
    "api:secret-detail": {"GET": Allow(USE), "PATCH": Allow(MANAGE), "DELETE": Allow(MANAGE, 204)},
    "api:secret-usage": {"GET": Allow(MANAGE)},
    "api:audit-event-list": {"GET": Allow(ADMIN)},
    "api:workflow-list": {"GET": Allow(MEMBER), "POST": Allow(EDITOR, 201)},
    "api:workflow-detail": {
        "GET": Allow(MEMBER),
        "PATCH": Allow(EDITOR),
        "DELETE": Allow(EDITOR, 204),
    },
    "api:workflow-runs": {"POST": Allow(MEMBER, 200)},  # viewers run workflows
    # Every member sees whether there is one; setting it up, rotating or removing it is
    # a change of the workflow (its runs act with the rights of whoever set it up).
    "api:workflow-webhook": {
        "GET": Allow(MEMBER),
        "POST": Allow(EDITOR, 201),
        "DELETE": Allow(EDITOR, 204),
    },
    "api:action-list": {"GET": Allow(MEMBER), "POST": Allow(EDITOR, 201)},
    "api:action-detail": {
        "GET": Allow(MEMBER),
        "PATCH": Allow(EDITOR),
        "DELETE": Allow(EDITOR, 204),
    },
    "api:action-execute": {"POST": Allow(MEMBER)},
    "api:run-list": {"GET": Allow(MEMBER)},
    "api:run-detail": {"GET": Allow(MEMBER)},
    # Whoever started the run, and members and admins; viewers may not stop others' runs.
    "api:run-cancel": {"POST": Allow(EDITOR)},
    "workflows:run_live": {"GET": Allow(MEMBER)},  # htmx: the run page's live part
    # bob started the run: a viewer may not cancel it (a viewer's own run: test_views.py)
    "workflows:run_cancel": {"POST": Allow(EDITOR, 302)},
    "/": {"GET": Allow(REDIRECT, 302)},
    "workflows:list": {"GET": Allow(MEMBER)},
    "workflows:create": {"POST": Allow(EDITOR, 302)},
    "workflows:edit": {"GET": Allow(MEMBER)},  # viewers get it read-only
    "workflows:settings": {"POST": Allow(EDITOR, 302)},
    "workflows:delete": {"POST": Allow(EDITOR, 302)},
    "workflows:action_add": {"POST": Allow(EDITOR, 302)},
    "workflows:action_save": {"POST": Allow(EDITOR, 302)},
    "workflows:action_move": {"POST": Allow(EDITOR, 302)},
    "workflows:action_delete": {"POST": Allow(EDITOR, 302)},
    "workflows:run_workflow": {"POST": Allow(MEMBER, 302)},
    "workflows:webhook": {"POST": Allow(EDITOR)},  # htmx: the panel, with the new URL once
    "workflows:webhook_remove": {"POST": Allow(EDITOR, 302)},
    "workflows:runs": {"GET": Allow(MEMBER)},
    "workflows:run": {"GET": Allow(MEMBER)},
    "secretsapp:keys": {"GET": Allow(MEMBER)},
    "secretsapp:picker": {"GET": Allow(MEMBER)},  # htmx: the + menu's key list
    "secretsapp:names": {"GET": Allow(MEMBER)},  # JSON: names for the chips
    # htmx: the Create Secret Key modal (viewers see it without the form) and its submit
    "secretsapp:create": {"GET": Allow(MEMBER), "POST": Allow(EDITOR, 201)},
    "secretsapp:manage": {"GET": Allow(MEMBER)},  # htmx: the Manage Secret Keys drawer
    "secretsapp:detail": {"GET": Allow(USE)},  # htmx: one key in the drawer
    "secretsapp:rename": {"POST": Allow(MANAGE)},
    "secretsapp:value": {"POST": Allow(MANAGE)},
    "secretsapp:access": {"POST": Allow(MANAGE)},
    "secretsapp:delete": {"POST": Allow(MANAGE)},
    "secretsapp:audit": {"GET": Allow(ADMIN)},
}

# Routes left to other tests, each with its reason. Keys are route names; "admin:" is
# the whole namespace.
EXCLUDED = {
    "admin:": "Django admin: its own tests (tests/secretsapp/test_admin.py) scope it per "
    "organization, and staff-only access is Django's",
    "schema": "the OpenAPI document describes routes, holds no object of any organization "
    "(tests/secretsapp/test_api_schema.py)",
    "api-docs": "Swagger UI: a static page that reads the schema",
    "login": "signing in must be reachable without being signed in",
    "logout": "ends the caller's own session; there is nothing of anyone else to reach",
    "webhook-trigger": "its credential is the token in the URL, not a persona: calls with "
    "every kind of token are in tests/workflows/test_webhooks.py and "
    "tests/security/test_webhooks.py",
}
STATIC_REASON = "static files: public assets, no data (served by whitenoise)"

# A body naming an object is validated like any id: foreign and unknown answer alike.
BODY_OBJECTS = {("api:action-list", "POST"): "workflow"}

# --- Reading the URL conf ----------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str  # "api:secret-detail", "secretsapp:rename", or the path of an unnamed route
    pattern: str
    parameters: tuple[str, ...]
    methods: tuple[str, ...]  # what the route answers
    is_api: bool
    method_restricted: bool  # a page whose decorator limits its methods (@require_POST)
    families: tuple[str | None, ...]  # the object family of each parameter (None: unknown)

    def __str__(self) -> str:
        return self.name


def _pattern_parameters(pattern: RoutePattern | RegexPattern) -> list[str]:
    if isinstance(pattern, RoutePattern):  # path(): in the order written
        return list(pattern.converters)
    return list(pattern.regex.groupindex)  # re_path() and the router's regexes


def _decorated_methods(view: Callable) -> set[str] | None:
    """The methods ``require_http_methods`` (``@require_POST``…) lets through, read from
    its closure along the ``functools.wraps`` chain — from the code, not by probing."""
    while view is not None:
        code = getattr(view, "__code__", None)
        if code is not None and "request_method_list" in code.co_freevars:
            cell = view.__closure__[code.co_freevars.index("request_method_list")]
            return {method.upper() for method in cell.cell_contents}
        view = getattr(view, "__wrapped__", None)
    return None


def _api_methods(callback: Callable) -> set[str]:
    """The methods of a DRF route: its viewset actions (or APIView handlers) that the
    view's ``http_method_names`` lets through, plus HEAD with GET, and OPTIONS."""
    view_class = callback.cls
    allowed = {method.upper() for method in view_class.http_method_names}
    actions = getattr(callback, "actions", None)
    if actions:
        handlers = {method.upper() for method in actions}
    else:
        handlers = {
            method.upper()
            for method in ("get", "post", "put", "patch", "delete")
            if hasattr(view_class, method)
        }
    methods = handlers & allowed
    if "GET" in methods:
        methods.add("HEAD")
    if "OPTIONS" in allowed:
        methods.add("OPTIONS")
    return methods


def _walk(
    patterns: list, prefix: str = "", namespace: str | None = None, parameters: tuple = ()
) -> Iterator[tuple[str, str | None, str, tuple[str, ...], Callable]]:
    for pattern in patterns:
        found = tuple(_pattern_parameters(pattern.pattern))
        if isinstance(pattern, URLResolver):
            inner = namespace
            if pattern.namespace:
                inner = f"{namespace}:{pattern.namespace}" if namespace else pattern.namespace
            yield from _walk(
                pattern.url_patterns, prefix + str(pattern.pattern), inner, parameters + found
            )
        elif isinstance(pattern, URLPattern):
            path = prefix + str(pattern.pattern)
            if pattern.name:
                name = f"{namespace}:{pattern.name}" if namespace else pattern.name
            else:
                name = "/" + path
            yield name, namespace, path, parameters + found, pattern.callback


def exclusion_reason(name: str, namespace: str | None, path: str) -> str | None:
    if path.startswith(settings.STATIC_URL.lstrip("/")):
        return STATIC_REASON
    for excluded, reason in EXCLUDED.items():
        # A namespace ("admin:") covers its unnamed routes too (admin's catch-all).
        if name == excluded or (excluded.endswith(":") and f"{namespace}:".startswith(excluded)):
            return reason
    return None


def discover_routes() -> tuple[list[Route], dict[str, str]]:
    """(routes to test, {excluded route: reason}) from the project's URL conf."""
    routes, excluded = [], {}
    for name, namespace, path, parameters, callback in _walk(get_resolver().url_patterns):
        reason = exclusion_reason(name, namespace, path)
        if reason:
            excluded[name] = reason
            continue
        is_api = hasattr(callback, "cls") and path.startswith("api/")
        if is_api:
            methods, restricted = _api_methods(callback), False
            basename = getattr(callback, "initkwargs", {}).get("basename")
            families = tuple(API_BASENAMES.get(basename) for _ in parameters)
        else:
            decorated = _decorated_methods(callback)
            methods, restricted = (decorated or {"GET"}), decorated is not None
            families = tuple(PAGE_PARAMETERS.get(parameter) for parameter in parameters)
        routes.append(
            Route(name, path, parameters, tuple(sorted(methods)), is_api, restricted, families)
        )
    return routes, excluded


ROUTES, EXCLUDED_ROUTES = discover_routes()

# --- The cells ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    route: Route
    method: str
    persona: str  # one of PERSONA_NAMES, or ANONYMOUS
    kinds: tuple[Kind, ...] = ()  # one per URL parameter
    body_kind: Kind | None = None
    variant: str = "valid"  # "invalid": a form that does not validate

    @property
    def allow(self) -> Allow | None:
        policy = POLICIES.get(self.route.name, {})
        return policy.get("GET" if self.method == "HEAD" else self.method)

    @property
    def organization(self) -> str | None:
        return ORGANIZATIONS.get(self.persona)

    @property
    def role(self) -> str | None:
        return ROLES.get(self.persona)

    def foreign_or_unknown(self, kinds: tuple[Kind, ...]) -> bool:
        return any(kind.organization != self.organization for kind in kinds)

    def key(self) -> str | None:
        return next((kind.name for kind in self.kinds if kind.family == "secret"), None)

    def __str__(self) -> str:
        parts = [self.route.name, self.method, self.persona, *map(str, self.kinds)]
        if self.body_kind:
            parts.append(f"body:{self.body_kind}")
        if self.variant != "valid":
            parts.append(self.variant)
        return "|".join(parts)


def _needs(route: Route) -> set[Need]:
    return {allow.need for allow in POLICIES[route.name].values()}


def _weakest_need(route: Route) -> Need:
    """What OPTIONS needs: DRF checks only the view's permission classes (the route-level
    ones), so it is refused only where every method of the route is admin-only."""
    return ADMIN if _needs(route) == {ADMIN} else MEMBER


@dataclass(frozen=True)
class Rule:
    says: str
    applies: Callable[[Cell], bool]
    answer: Callable[[Cell], int]


def _key_use_only(cell: Cell) -> bool:
    use, manage = key_rights(cell.persona, cell.key())
    return use and not manage


def _changes_a_workflow_with_a_key_it_may_not_use(cell: Cell) -> bool:
    """A write to a workflow (or one of its actions, or an action added to it) whose
    steps reference a key the persona may not Use: no confused deputy (DESIGN.md)."""
    kinds = [*cell.kinds, *([cell.body_kind] if cell.body_kind else [])]
    keys = {WORKFLOW_KEYS[kind.name] for kind in kinds if kind.name in WORKFLOW_KEYS}
    return cell.allow.need is EDITOR and any(not key_rights(cell.persona, key)[0] for key in keys)


def _action_not_in_workflow(cell: Cell) -> bool:
    by_family = {kind.family: kind.name for kind in cell.kinds}
    return {"workflow", "action"} <= set(by_family) and ACTION_WORKFLOW[
        by_family["action"]
    ] != by_family["workflow"]


ANONYMOUS_RULE = Rule(
    "anonymous → 401 under /api/, a redirect to /login/ for pages",
    lambda cell: cell.persona == ANONYMOUS,
    lambda cell: 401 if cell.route.is_api else 302,
)

# The expected answer of a cell is the answer of the first rule that applies.
RULES: list[Rule] = [
    Rule(
        "public route (sign-in): own credentials → 200, no account → 400",
        lambda cell: PUBLIC in _needs(cell.route),
        lambda cell: 400 if cell.persona == ANONYMOUS and cell.method == "POST" else 200,
    ),
    Rule(
        "a redirect-only route redirects everyone",
        lambda cell: REDIRECT in _needs(cell.route),
        lambda cell: 302,
    ),
    ANONYMOUS_RULE,
    Rule(
        "OPTIONS describes the route, not the object: the same answer for any id, "
        "403 only on admin-only routes",
        lambda cell: cell.method == "OPTIONS",
        lambda cell: 403 if _weakest_need(cell.route) is ADMIN and cell.role != Role.ADMIN else 200,
    ),
    Rule(
        "foreign object (or unknown id) in the URL → 404, never 403",
        lambda cell: cell.foreign_or_unknown(cell.kinds),
        lambda cell: 404,
    ),
    Rule(
        "an action addressed through a workflow it is not in → 404",
        _action_not_in_workflow,
        lambda cell: 404,
    ),
    Rule(
        "restricted key without a grant → 404 (invisible)",
        lambda cell: cell.key() is not None and not key_rights(cell.persona, cell.key())[0],
        lambda cell: 404,
    ),
    Rule(
        "foreign object (or unknown id) named in the body → 400, as any unknown id",
        lambda cell: cell.body_kind is not None and cell.foreign_or_unknown((cell.body_kind,)),
        lambda cell: 400,
    ),
    Rule(
        "admin-only route → 403 for members and viewers",
        lambda cell: cell.allow.need is ADMIN and cell.role != Role.ADMIN,
        lambda cell: 403,
    ),
    Rule(
        "viewer on a write → 403",
        lambda cell: cell.allow.need is EDITOR and cell.role == Role.VIEWER,
        lambda cell: 403,
    ),
    Rule(
        "a change of a workflow that references a key the persona may not Use → 403",
        _changes_a_workflow_with_a_key_it_may_not_use,
        lambda cell: 403,
    ),
    Rule(
        "Use-only on a Manage route → 403 (and the denial is audited)",
        lambda cell: cell.allow.need is MANAGE and _key_use_only(cell),
        lambda cell: 403,
    ),
    Rule(
        "an invalid form from someone allowed to write → 422, the form again",
        lambda cell: cell.variant == "invalid",
        lambda cell: 422,
    ),
    Rule("otherwise → the route's success answer", lambda cell: True, lambda cell: cell.allow.ok),
]


def expected(cell: Cell) -> tuple[int, Rule]:
    for rule in RULES:
        if rule.applies(cell):
            return rule.answer(cell), rule
    raise AssertionError("the last rule always applies")


# --- Request bodies (test data, not expectations) ----------------------------------------


@dataclass
class World:
    users: dict[str, Any]
    tokens: dict[str, str]
    ids: dict[str, Any]  # kind name → what goes in the URL
    # What every cell starts from (each is rolled back): fingerprint() and the number of
    # `denied` audit events, taken once.
    baseline: dict[str, list] = field(default_factory=dict)
    denials: int = 0


def _id(world: World, kind: Kind) -> Any:
    return world.ids[kind.name]


BODIES: dict[tuple[str, str], Callable[[World, Cell], dict[str, Any]]] = {
    ("api:token", "POST"): lambda world, cell: {
        "username": USERNAMES.get(cell.persona, "nobody-at-all"),
        "password": PASSWORD if cell.persona != ANONYMOUS else "not-the-password",
    },
    ("api:member-list", "POST"): lambda world, cell: {
        "username": "newbie",
        "email": "newbie@example.com",
        "password": PASSWORD,
        "role": "member",
    },
    ("api:member-detail", "PATCH"): lambda world, cell: {"role": "viewer"},
    ("api:group-list", "POST"): lambda world, cell: {"name": "Ops"},
    ("api:group-detail", "PATCH"): lambda world, cell: {"name": "Renamed group"},
    ("api:secret-list", "POST"): lambda world, cell: {
        "name": "New key",
        "value": "new-value-0123456789",
        "access": "team",
    },
    ("api:secret-detail", "PATCH"): lambda world, cell: {"name": "Renamed key"},
    ("api:workflow-list", "POST"): lambda world, cell: {"name": "New workflow"},
    ("api:workflow-detail", "PATCH"): lambda world, cell: {"name": "Renamed workflow"},
    ("api:workflow-runs", "POST"): lambda world, cell: {"inputs": {}},
    ("api:action-list", "POST"): lambda world, cell: {
        "workflow": _id(world, cell.body_kind),
        "name": "New step",
        "type": "send_api_request",
        "config": http_action(),
    },
    ("api:action-detail", "PATCH"): lambda world, cell: {"name": "Renamed step"},
    ("api:action-execute", "POST"): lambda world, cell: {"inputs": {}},
    ("workflows:create", "POST"): lambda world, cell: {"name": "New workflow", "inputs": ""},
    ("workflows:settings", "POST"): lambda world, cell: {"name": "Renamed", "inputs": ""},
    ("workflows:action_add", "POST"): lambda world, cell: {"type": "send_api_request"},
    ("workflows:action_save", "POST"): lambda world, cell: {
        "name": "" if cell.variant == "invalid" else "Renamed step",
        "method": "GET",
        "url": "http://127.0.0.1:9/renamed",
        "body-type": "none",
    },
    ("workflows:action_move", "POST"): lambda world, cell: {"direction": "down"},
    ("secretsapp:create", "POST"): lambda world, cell: {
        "name": "" if cell.variant == "invalid" else "New key",
        "value": "new-value-0123456789",
        "access": "team",
    },
    ("secretsapp:rename", "POST"): lambda world, cell: {
        "name": "" if cell.variant == "invalid" else "Renamed key",
        "confirm": "yes",
    },
    ("secretsapp:value", "POST"): lambda world, cell: {
        "value": "" if cell.variant == "invalid" else "another-value-0123456789"
    },
    ("secretsapp:access", "POST"): lambda world, cell: {
        "access": "everyone" if cell.variant == "invalid" else "restricted",
        **_grants_keeping_the_managers(world, cell),
    },
    ("secretsapp:delete", "POST"): lambda world, cell: {"confirm": "yes"},
}
# Forms that re-render with their errors: each also gets an invalid submission.
INVALID_FORMS = {
    ("workflows:action_save", "POST"),
    ("secretsapp:create", "POST"),
    ("secretsapp:rename", "POST"),
    ("secretsapp:value", "POST"),
    ("secretsapp:access", "POST"),
}


def _grants_keeping_the_managers(world: World, cell: Cell) -> dict[str, list[str]]:
    """The key's grants as they are, plus Use for a group of its organization: a change
    that leaves the caller their Manage (a manager who removes their own grant is then
    answered 404 — no longer theirs to see)."""
    if cell.key() == "foreign-key":
        principals = {f"group:{world.ids['foreign-group']}": "use"}
    else:
        principals = {
            **{
                f"user:{world.users[persona].pk}": level
                for persona, level in KEYS["restricted-key"].grants.items()
            },
            f"group:{world.ids['group']}": "use",
        }
    return {"grant-principal": list(principals), "grant-level": list(principals.values())}


def generate_cells() -> list[Cell]:
    cells = []
    for route in ROUTES:
        if route.name not in POLICIES or None in route.families:
            # Unclassified: one cell that fails, so the matrix itself cannot pass.
            cells.append(Cell(route, route.methods[0], "admin"))
            continue
        methods = sorted(set(route.methods) | set(POLICIES[route.name]))
        kind_choices = list(itertools.product(*(KINDS[family] for family in route.families)))
        for method in methods:
            body_family = BODY_OBJECTS.get((route.name, method))
            body_kinds = KINDS[body_family] if body_family else (None,)
            variants = ["valid", "invalid"] if (route.name, method) in INVALID_FORMS else ["valid"]
            for persona, kinds, body_kind, variant in itertools.product(
                [*PERSONA_NAMES, ANONYMOUS], kind_choices, body_kinds, variants
            ):
                cells.append(Cell(route, method, persona, kinds, body_kind, variant))
    return cells


CELLS = generate_cells()

# --- The world ---------------------------------------------------------------------------


def _build_world() -> World:
    acme = OrganizationFactory(name="Acme")
    globex = OrganizationFactory(name="Globex")
    organizations = {"acme": acme, "globex": globex}
    users = {
        persona: MembershipFactory(
            user__username=USERNAMES[persona],
            organization=organizations[ORGANIZATIONS[persona]],
            role=ROLES[persona],
        ).user
        for persona in PERSONA_NAMES
    }
    tokens = {persona: Token.objects.create(user=user).key for persona, user in users.items()}
    ids: dict[str, Any] = {}

    values = {"restricted-key": RESTRICTED_VALUE, "team-key": TEAM_VALUE}
    for name, spec in KEYS.items():
        ids[name] = secret_services.create_secret_key(
            users[spec.creator],
            name=name.replace("-", " ").capitalize(),
            value=values.get(name, FOREIGN_VALUE),
            access_level=spec.access,
            grants=[
                {"principal_type": "user", "principal_id": users[persona].pk, "level": level}
                for persona, level in spec.grants.items()
            ],
        ).pk
    ids["unknown-key"] = uuid.UUID("00000000-0000-4000-8000-000000000000")

    ids["group"] = secret_services.create_group(
        users["admin"], acme, name="Platform", members=[users["member_use"].pk]
    ).pk
    ids["foreign-group"] = secret_services.create_group(
        users["outsider"], globex, name="Globex ops", members=[users["outsider"].pk]
    ).pk
    ids["member"] = MembershipFactory(user__username="frank-target", organization=acme).user_id
    ids["foreign-member"] = MembershipFactory(
        user__username="grace-target", organization=globex
    ).user_id

    # Two actions per workflow so that moving the first one down really moves it. They
    # call a closed local port: a run fails at once, without leaving 127.0.0.1.
    def workflow(owner: str, name: str) -> Workflow:
        created = workflow_services.create_workflow(users[owner], name=name)
        for step in ("First", "Second"):
            workflow_services.create_action(
                users[owner],
                created,
                name=step,
                action_type="send_api_request",
                config=http_action(),
            )
        return created

    acme_workflow = workflow("member_use", "Nightly")
    second_workflow = workflow("member_use", "Weekly")
    foreign_workflow = workflow("outsider", "Globex nightly")
    keyed_workflow = workflow("member_use", "Charges")
    workflow_services.update_action(
        users["member_use"],
        keyed_workflow.actions.get(position=2),
        config=http_action(
            headers=[{"name": "X-Key", "value": f"{{{{secret:{ids['restricted-key']}}}}}"}]
        ),
    )
    ids["keyed-workflow"] = keyed_workflow.pk
    ids["keyed-action"] = keyed_workflow.actions.get(position=1).pk
    ids["workflow"], ids["second-workflow"] = acme_workflow.pk, second_workflow.pk
    ids["foreign-workflow"] = foreign_workflow.pk
    ids["action"] = acme_workflow.actions.get(position=1).pk
    ids["action-elsewhere"] = second_workflow.actions.get(position=1).pk
    ids["foreign-action"] = foreign_workflow.actions.get(position=1).pk
    runs.enqueue(users["member_use"], acme_workflow, {})  # a finished run in the lists
    for owner, with_webhook in (
        ("member_use", acme_workflow),
        ("member_use", keyed_workflow),
        ("outsider", foreign_workflow),
    ):
        webhooks.create_or_rotate(users[owner], with_webhook)
    # Still queued (never sent to a worker), so that cancelling it is allowed or refused
    # by who asks, not by its state; bob started it: viewers may not cancel it.
    ids["run"] = Run.objects.create(
        organization=acme_workflow.organization,
        workflow=acme_workflow,
        triggered_by=users["member_use"],
    ).pk
    ids["foreign-run"] = Run.objects.create(
        organization=foreign_workflow.organization,
        workflow=foreign_workflow,
        triggered_by=users["outsider"],
    ).pk
    for unknown in ("unknown-workflow", "unknown-action", "unknown-group", "unknown-member"):
        ids[unknown] = 2_000_000_000
    ids["unknown-run"] = uuid.UUID("00000000-0000-4000-8000-000000000001")
    return World(users, tokens, ids)


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker) -> Iterator[World]:
    """Built once, inside a transaction rolled back after the module, as Django's
    ``TestCase.setUpTestData`` does. Each cell's test (``django_db``) then runs in a
    savepoint inside it that is rolled back: every cell starts from the same world, and
    the throttle counters (in the database cache) go with it."""
    with django_db_blocker.unblock(), transaction.atomic():
        built = _build_world()
        built.baseline, built.denials = fingerprint(), _denials()
        yield built
        transaction.set_rollback(True)


# --- Asking --------------------------------------------------------------------------------


def fingerprint() -> dict[str, list]:
    """What a refused request (or a read) must leave as it was. `denied` audit events are
    left out: recording a refusal is what a refusal should do."""
    return {
        "keys": list(
            SecretKey.objects.order_by("pk").values_list(
                "pk", "name", "access", "version", "updated_at"
            )
        ),
        "user grants": list(
            SecretKeyUserObjectPermission.objects.order_by("pk").values_list(
                "content_object_id", "user_id", "permission__codename"
            )
        ),
        "group grants": list(
            SecretKeyGroupObjectPermission.objects.order_by("pk").values_list(
                "content_object_id", "group_id", "permission__codename"
            )
        ),
        "workflows": [
            json.dumps(row, default=str)
            for row in Workflow.objects.order_by("pk").values_list(
                "pk", "organization_id", "name", "inputs", "updated_at"
            )
        ],
        "actions": [
            json.dumps(row, default=str)
            for row in Action.objects.order_by("pk").values_list(
                "pk", "workflow_id", "name", "position", "config"
            )
        ],
        "members": list(
            Membership.objects.order_by("user_id").values_list(
                "user_id", "organization_id", "role", "user__is_active"
            )
        ),
        "groups": list(OrganizationGroup.objects.order_by("pk").values_list("pk", "name")),
        "group members": list(
            Group.user_set.through.objects.order_by("group_id", "user_id").values_list(
                "group_id", "user_id"
            )
        ),
        "runs": list(Run.objects.order_by("pk").values_list("pk", "status")),
        "webhooks": list(
            Webhook.objects.order_by("pk").values_list("pk", "workflow_id", "token_hash")
        ),
        "audit events": list(
            AuditEvent.objects.exclude(action=AuditAction.DENIED)
            .order_by("pk")
            .values_list("pk", flat=True)
        ),
    }


def _denials() -> int:
    return AuditEvent.objects.filter(action=AuditAction.DENIED).count()


def _url(world: World, route: Route, kinds: tuple[Kind, ...]) -> str:
    if route.name.startswith("/"):
        return route.name
    kwargs = {
        parameter: world.ids[kind.name]
        for parameter, kind in zip(route.parameters, kinds, strict=True)
    }
    return reverse(route.name, kwargs=kwargs)


def request(world: World, cell: Cell, kinds: tuple[Kind, ...] | None = None) -> HttpResponse:
    url = _url(world, cell.route, cell.kinds if kinds is None else kinds)
    body_for = BODIES.get((cell.route.name, cell.method))
    body = body_for(world, cell) if body_for else None
    if cell.route.is_api:
        client = APIClient()
        if cell.persona != ANONYMOUS:
            client.credentials(HTTP_AUTHORIZATION=f"Token {world.tokens[cell.persona]}")
        send = getattr(client, cell.method.lower())
        return send(url, body, format="json") if body is not None else send(url)
    client = Client()
    if cell.persona != ANONYMOUS:
        client.force_login(world.users[cell.persona])
    if cell.method == "POST":
        # As htmx sends it; the views answer the same either way.
        return client.post(url, body or {}, headers={"HX-Request": "true"})
    return client.get(url)


SECRET_VALUES = (RESTRICTED_VALUE, TEAM_VALUE, FOREIGN_VALUE)

# --- The tests -----------------------------------------------------------------------------


def classification_problems(routes: list[Route]) -> list[str]:
    """What keeps the matrix from covering ``routes``: a route neither in POLICIES nor
    EXCLUDED, a method it answers that POLICIES does not name, an object parameter with no
    kinds — and POLICIES entries for routes that are gone."""
    problems = []
    for route in routes:
        if route.name not in POLICIES:
            problems.append(f"{route.name} ({route.pattern}) is not classified")
            continue
        if None in route.families:
            problems.append(f"{route.name}: no object kinds for parameters {route.parameters}")
        declared = set(POLICIES[route.name])
        answered = set(route.methods) - ({"HEAD", "OPTIONS"} if route.is_api else set())
        if answered - declared:
            problems.append(f"{route.name}: {sorted(answered - declared)} not classified")
        # Only a page without a method decorator may answer more than it is known for.
        if (route.is_api or route.method_restricted) and declared - answered:
            problems.append(f"{route.name}: classified {sorted(declared - answered)}, not served")
    for name in POLICIES.keys() - {route.name for route in routes}:
        problems.append(f"{name} is classified but no longer in the URL conf")
    return problems


def test_every_route_is_classified():
    assert classification_problems(ROUTES) == []


def test_a_new_route_without_a_policy_fails_the_matrix():
    # The guard itself must be able to fail: a route added to the URL conf tomorrow.
    new_route = Route("api:secret-export", "api/v1/secrets/export/", (), ("GET",), True, False, ())
    assert classification_problems([*ROUTES, new_route]) == [
        "api:secret-export (api/v1/secrets/export/) is not classified"
    ]
    unclassified_cell = Cell(new_route, "GET", "admin")
    with pytest.raises(KeyError):
        expected(unclassified_cell)


def test_the_url_conf_has_what_the_matrix_expects():
    # Guards the discovery itself: if it stopped finding the router's routes or the
    # partials, the matrix would shrink silently.
    names = {route.name for route in ROUTES}
    assert {"api:secret-detail", "api:action-execute", "secretsapp:picker"} <= names
    assert set(EXCLUDED_ROUTES) >= {"schema", "api-docs", "login", "logout"}
    assert any(name.startswith("admin:") for name in EXCLUDED_ROUTES)
    secret_detail = next(route for route in ROUTES if route.name == "api:secret-detail")
    # PUT is routed by DRF but not offered (README): http_method_names keeps it out.
    assert secret_detail.methods == ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH")
    rename = next(route for route in ROUTES if route.name == "secretsapp:rename")
    assert rename.methods == ("POST",) and rename.method_restricted


def test_every_rule_decides_some_cell():
    # A rule that never decides a cell is dead weight or hides a mistake in the table.
    deciding = {expected(cell)[1].says for cell in CELLS if cell.route.name in POLICIES}
    assert [rule.says for rule in RULES if rule.says not in deciding] == []


@pytest.mark.django_db
@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_permission_matrix(world: World, cell: Cell):
    assert cell.route.name in POLICIES, f"unclassified route {cell.route.name}: add it to POLICIES"
    assert None not in cell.route.families, f"{cell.route.name}: object kinds unknown"
    status, rule = expected(cell)
    before, denials_before = world.baseline, world.denials

    response = request(world, cell)

    assert response.status_code == status, (
        f"{cell}: expected {status} ({rule.says}), got {response.status_code}: "
        f"{response.content[:300]!r}"
    )
    content = response.content.decode(errors="replace")
    for value in SECRET_VALUES:
        assert value not in content
    if (
        cell.persona != ANONYMOUS
        and cell.foreign_or_unknown(cell.kinds)
        and cell.method != "OPTIONS"
    ):
        assert response.status_code == 404, "a foreign object must be 404, never 403"
    if rule is ANONYMOUS_RULE and not cell.route.is_api:
        assert response["Location"].startswith("/login/")
    if cell.route.is_api and status >= 400 and cell.method != "HEAD":
        assert response.json()["detail"]

    refused = status >= 400 or rule is ANONYMOUS_RULE
    if refused or cell.method in SAFE_METHODS:
        assert fingerprint() == before, f"{cell}: changed something ({rule.says})"
    elif cell.allow.need is not PUBLIC:
        assert fingerprint() != before, f"{cell}: allowed, but nothing changed"
    if rule.says.startswith("Use-only"):
        assert _denials() == denials_before + 1, "a Manage attempt with Use only is audited"

    if cell.method == "OPTIONS" and cell.kinds:
        # The same answer for an unknown id: OPTIONS says nothing about the object.
        unknown = tuple(KINDS[kind.family][-1] for kind in cell.kinds)
        again = request(world, cell, unknown)
        assert (again.status_code, again.content) == (response.status_code, response.content)


def _unanswered(route: Route) -> list[str]:
    if not (route.is_api or route.method_restricted):
        return []  # a page without a method decorator answers whatever it is sent
    return sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - set(route.methods))


UNANSWERED = [
    (route, method)
    for route in ROUTES
    if route.name in POLICIES and None not in route.families
    for method in _unanswered(route)
]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("route", "method"), UNANSWERED, ids=[f"{route}|{method}" for route, method in UNANSWERED]
)
def test_methods_a_route_does_not_answer_are_405(world: World, route: Route, method: str):
    # The admin passes every route-level permission, so what is left is the method.
    kinds = tuple(KINDS[family][0] for family in route.families)
    cell = Cell(route, method, "admin", kinds)
    response = request(world, cell)
    assert response.status_code == 405, response.content[:300]
    assert fingerprint() == world.baseline
