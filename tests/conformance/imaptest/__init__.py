"""A runner for Dovecot's scripted IMAP tests (the imaptest "scripted test" format).

`args` reads IMAP arguments the way the format means them, `script` parses a test file,
`matcher` decides whether server responses match, `client` speaks IMAP over a socket,
`runner` prepares the mailbox and runs scripts, `dovecot` starts a private reference
server to check the runner against.
"""
