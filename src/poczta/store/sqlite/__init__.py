"""The embedded store backend: one SQLite database file and a directory of message bodies.

`store.SqliteStore` is the `MailStore`; `writer` commits its jobs in groups, `committer`
does so for the workers of one server from a process of its own, `migrate` applies
`migrations/`, `recovery` and `shutdown` repair what a crash left. Bodies are files named
by digest (`blobs`, `blob_temp`), their references counted in the database (`blob_refs`).
The side stores (`side`: `greylist`, `sending`) share the file with their own connection.
"""
