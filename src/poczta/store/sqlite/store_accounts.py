"""`SqliteStore`'s domains, users and aliases: each call one read or one writer job of
`poczta.store.sqlite.accounts`."""

from __future__ import annotations

from collections.abc import Sequence

from poczta.store.base import AddressEntry, UserId, UserRecord
from poczta.store.sqlite import accounts
from poczta.store.sqlite.store_core import SqliteStoreCore

__all__ = ["SqliteAccountMethods"]


class SqliteAccountMethods(SqliteStoreCore):
    """The account-facing part of `SqliteStore`."""

    async def add_domain(self, domain: str) -> None:
        await self._write(accounts.add_domain_job(domain))

    async def remove_domain(self, domain: str, *, force: bool = False) -> None:
        await self._write_releasing(accounts.remove_domain_job(domain, force))

    async def list_domains(self) -> list[str]:
        return await self._read(accounts.list_domains)

    async def domain_exists(self, domain: str) -> bool:
        return await self._read(lambda c: accounts.domain_exists(c, domain))

    async def add_user(self, address: str, password_hash: str, scram: str) -> UserId:
        result: UserId = await self._write(accounts.add_user_job(address, password_hash, scram))
        return result

    async def set_password(self, address: str, password_hash: str, scram: str) -> None:
        await self._write(accounts.set_password_job(address, password_hash, scram))

    async def remove_user(self, address: str) -> None:
        await self._write_releasing(accounts.remove_user_job(address))

    async def list_users(self, domain: str | None = None) -> list[UserRecord]:
        return await self._read(lambda c: accounts.list_users(c, domain))

    async def get_user(self, address: str) -> UserRecord | None:
        return await self._read(lambda c: accounts.get_user(c, address))

    async def add_alias(self, source: str, target: str) -> None:
        await self._write(accounts.add_alias_job(source, target))

    async def remove_alias(self, source: str, target: str | None = None) -> None:
        await self._write(accounts.remove_alias_job(source, target))

    async def list_aliases(self, domain: str | None = None) -> list[tuple[str, str]]:
        return await self._read(lambda c: accounts.list_aliases(c, domain))

    async def find_addresses(self, addresses: Sequence[str]) -> list[AddressEntry]:
        return await self._read(lambda c: accounts.find_addresses(c, addresses))
