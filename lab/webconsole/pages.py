"""The console's pages, in one registry: their paths, titles and who may open them.

A role is data, not code: :data:`PAGES` says which roles see a page, and the app refuses
the others (403) before anything is read. Auditors and the admin see everything; a modeler
(a risk modeler or a platform data scientist) sees the catalog, the budgets and the jobs, not
the authorization registry's counts or the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.webconsole.users import Role

EVERYONE: frozenset[Role] = frozenset({"admin", "auditor", "modeler"})
OVERSIGHT: frozenset[Role] = frozenset({"admin", "auditor"})


@dataclass(frozen=True)
class PageSpec:
    """One page: its Flask endpoint, title, path and the roles that may open it."""

    endpoint: str
    title: str
    path: str
    roles: frozenset[Role]
    nav: bool = True


PAGES: tuple[PageSpec, ...] = (
    PageSpec("overview", "Overview", "/", EVERYONE),
    PageSpec("features", "Feature sets", "/features", EVERYONE),
    PageSpec("feature", "Feature set", "/features/<ref>", EVERYONE, nav=False),
    PageSpec("authorizations", "Authorizations", "/authorizations", OVERSIGHT),
    PageSpec("budgets", "Budgets", "/budgets", EVERYONE),
    PageSpec("jobs", "Jobs", "/jobs", EVERYONE),
    PageSpec("job", "Job", "/jobs/<job_id>", EVERYONE, nav=False),
    PageSpec("audit", "Audit", "/audit", OVERSIGHT),
)

BY_ENDPOINT = {page.endpoint: page for page in PAGES}


def may_view(role: Role, endpoint: str) -> bool:
    """Whether ``role`` may open the page of ``endpoint``."""
    page = BY_ENDPOINT.get(endpoint)
    return page is not None and role in page.roles


def nav_for(role: Role) -> list[PageSpec]:
    """The pages in ``role``'s navigation bar."""
    return [p for p in PAGES if p.nav and role in p.roles]
