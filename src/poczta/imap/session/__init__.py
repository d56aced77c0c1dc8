"""IMAP sessions: the glue between the sans-I/O IMAP core and the store, one module per
command area (`auth`, `mailboxes`, `selected`, `messages`, `append`), the loop in `core`."""

from poczta.imap.session.core import IMAP_REPLIES, ImapContext, ImapSession, run_imap_session

__all__ = ["IMAP_REPLIES", "ImapContext", "ImapSession", "run_imap_session"]
