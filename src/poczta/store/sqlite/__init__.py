"""The embedded store backend: one SQLite database file and a directory of message bodies.

`store.SqliteStore` is the `MailStore` (opened by `poczta.store.open_store`); `writer`
commits its jobs in groups, `committer` does so for the workers of one server from a
process of its own, `migrate` applies `migrations/`, `recovery` and `shutdown` repair what
a crash left. Bodies are files named by digest (`blobs`, `blob_temp`) with their
references counted in the database (`blob_refs`); `bodies` is the backend's `BlobStore`
over both. The side stores (`side`: `greylist`, `sending`) share the database file with
connections of their own. Recipient routing is not here: the store only finds addresses
(`accounts.find_addresses`) for the rules of `poczta.routing`.
"""
