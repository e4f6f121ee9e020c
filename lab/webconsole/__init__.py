"""The lab's read-only web console (``lab console``) for auditors, data scientists and modelers.

One party's home, shown to the users of the lab's MLflow server: feature sets (versions,
quality reports, usage and what they contributed), authorization counts (never ids), privacy
budgets (caps, spends, burn-down, the events behind each spend), jobs (status, privacy
parameters, lift, the MLflow run) and the audit trail (chain state, anchors, alerts). Nothing
it serves can change the home; every page an auditor opens is itself audited.

Modules: :mod:`~lab.webconsole.config` (settings), :mod:`~lab.webconsole.users` (login and
roles), :mod:`~lab.webconsole.pages` (which role sees which page), :mod:`~lab.webconsole.app`
(the Flask app), :mod:`~lab.webconsole.sources` (what each page reads),
:mod:`~lab.webconsole.audit_index` and :mod:`~lab.webconsole.verification` (the audit log,
followed incrementally), :mod:`~lab.webconsole.stamps` (caches keyed by file stamps),
:mod:`~lab.webconsole.runs` (MLflow), :mod:`~lab.webconsole.plots` (SVG),
:mod:`~lab.webconsole.server` (the loopback server), :mod:`~lab.webconsole.cli` (``lab console``).
"""

from lab.webconsole.config import DEFAULT_PORT, HOST, ConsoleConfig
from lab.webconsole.errors import ConsoleSetupError
from lab.webconsole.users import User, UserStore, add_user

__all__ = [
    "DEFAULT_PORT",
    "HOST",
    "ConsoleConfig",
    "ConsoleSetupError",
    "User",
    "UserStore",
    "add_user",
]
