"""Act on duplicate groups safely: plan, verify, journal, act, and undo.

`plan` decides which file gets which operation; `operations` holds one class per operation (move,
trash, hardlink, delete) that checks, performs, undoes and purges; `journal` is the fsynced JSON-lines
record those steps write first; `runner` drives them; `trash` finds trashed files again for undo.
"""

from photodedup.client.actions.fsutil import TEMP_PREFIX, file_md5
from photodedup.client.actions.journal import JOURNAL_VERSION, Journal, read_journal
from photodedup.client.actions.operations import BACKUP_PREFIX, OPERATIONS, operation
from photodedup.client.actions.plan import (
    KINDS,
    MODES,
    Action,
    ActionError,
    Mode,
    common_root,
    move_root,
    outside_roots,
    plan_actions,
)
from photodedup.client.actions.runner import ApplyResult, UndoResult, apply_actions, purge_backups, undo

__all__ = [
    "BACKUP_PREFIX",
    "JOURNAL_VERSION",
    "KINDS",
    "MODES",
    "OPERATIONS",
    "TEMP_PREFIX",
    "Action",
    "ActionError",
    "ApplyResult",
    "Journal",
    "Mode",
    "UndoResult",
    "apply_actions",
    "common_root",
    "file_md5",
    "move_root",
    "outside_roots",
    "operation",
    "plan_actions",
    "purge_backups",
    "read_journal",
    "undo",
]
