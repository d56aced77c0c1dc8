"""Logins against the store, throttled: password and SCRAM checks shared by SMTP, POP3 and IMAP.

Password verification (argon2id: ~70 ms of CPU and 64 MiB each) runs on a pool of one
thread per core: more threads would not finish 50 concurrent logins sooner, only hold
more 64 MiB buffers at once. An unknown account is verified against a dummy hash so that timing and
answers never tell whether a user exists; failures for unknown accounts are throttled
the same way as for real ones. A client the throttle refuses is answered as a failure
without a password check, and that refusal is not counted as a new failure. Every login
outcome writes one log line: ``auth.ok`` or ``auth.failed``.

The throttle's rules are `LoginThrottle`'s. Its counts are the throttle's own, in this
process, unless a `LoginFailureStore` is given: then every process and node sharing
the store counts the same failures (so spreading guesses over nodes gains nothing),
with one read before a password is checked and one write per failure. Times are then
the throttle's clock, which must be wall-clock time (`time.time`) to mean the same on
every node. A SCRAM success (reported by a session that cannot wait) forgives the
pair's failures in the background.

A hash made with older or lighter parameters is replaced by a current one after a
successful login with it. The client is answered first: the new hash (a full argon2id,
~70 ms of CPU) is made afterwards on a thread of its own, so that neither this client
nor the password checks of the next ones wait for it (a burst of first logins after
an import would otherwise queue every check behind every rehash). At most
`MAX_PENDING_REHASHES` wait at a time, one per account; a login past that keeps its
old hash until a later login replaces it.

A hash's 64 MiB is mapped by libsodium for that hash alone (populated at once) and
unmapped when it ends, so nothing of it stays in the process or in an allocator arena
afterwards: while a backlog of rehashes drains, the process is 64 MiB larger, then
back to its size before.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from poczta.accounts import (
    Failures,
    LoginThrottle,
    hash_password,
    needs_rehash,
    normalize_address,
    verify_password,
)
from poczta.logs import log
from poczta.sasl import ScramCredentials, derive_scram_credentials
from poczta.store.base import LoginFailureStore, MailStore

_DUMMY_SCRAM = derive_scram_credentials("poczta-dummy-password-for-unknown-users")
_HASHING = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="poczta-argon2")
_REHASHING = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poczta-rehash")
MAX_PENDING_REHASHES = 64


class LoginService:
    """Answers "is this password right for this account?" with throttling and logging."""

    def __init__(
        self,
        store: MailStore,
        throttle: LoginThrottle,
        shared: LoginFailureStore | None = None,
    ) -> None:
        self.store = store
        self.throttle = throttle
        self.shared = shared  # None: the throttle's counts, of this process only
        self._rehashing: dict[str, asyncio.Task[None]] = {}  # by account
        self._forgiving: set[asyncio.Task[None]] = set()

    async def failures(self, ip: str, account: str) -> Failures:
        """The failures that concern this attempt, wherever they are counted."""
        if self.shared is None:
            return self.throttle.failures(ip, account)
        network, name = self.throttle.keys(ip, account)
        since = self.throttle.clock() - self.throttle.window
        return await self.shared.login_failures(network, name, since, self.throttle.caps)

    async def is_blocked(self, ip: str, account: str) -> bool:
        return self.throttle.blocks(await self.failures(ip, account))

    async def _record_failure(self, ip: str, account: str) -> Failures:
        if self.shared is None:
            self.throttle.record_failure(ip, account)
            return self.throttle.failures(ip, account)
        network, name = self.throttle.keys(ip, account)
        now = self.throttle.clock()
        since = now - self.throttle.window
        return await self.shared.add_login_failure(network, name, now, since, self.throttle.caps)

    async def _forgive(self, ip: str, account: str) -> None:
        if self.shared is None:
            self.throttle.record_success(ip, account)
            return
        await self.shared.forgive_login_failures(*self.throttle.keys(ip, account))

    def _account(self, authcid: str) -> str:
        try:
            return normalize_address(authcid)
        except ValueError:
            return authcid.lower()

    async def check_password(
        self, ip: str, authcid: str, password: str, service: str
    ) -> str | None:
        """The canonical user address when the password matches, else None (after a delay)."""
        account = self._account(authcid)
        counts = await self.failures(ip, account)
        if self.throttle.blocks(counts):
            await self.failed(ip, account, service, "throttled")
            return None
        user = await self.store.get_user(account)
        stored_hash = user.password_hash if user is not None else None
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(_HASHING, verify_password, stored_hash, password)
        if ok and user is not None:
            if counts.pair:  # else nothing to forgive: no write on a clean login
                await self._forgive(ip, self._account(user.address))
            log("auth.ok", service=service, ip=ip, user=user.address)
            if needs_rehash(user.password_hash):
                self._rehash_later(user.address, password, user.scram)
            return user.address
        await self.failed(ip, account, service, "bad credentials")
        return None

    def _rehash_later(self, address: str, password: str, scram: str) -> None:
        if address in self._rehashing or len(self._rehashing) >= MAX_PENDING_REHASHES:
            return
        task = asyncio.ensure_future(self._rehash(address, password, scram))
        self._rehashing[address] = task
        task.add_done_callback(lambda _: self._rehashing.pop(address, None))

    async def rehashed(self) -> None:
        """Wait until the hashes being replaced are stored."""
        while self._rehashing:
            await asyncio.gather(*self._rehashing.values())

    async def _rehash(self, address: str, password: str, scram: str) -> None:
        """Store the password under today's hash parameters; a failure only costs a log line."""
        loop = asyncio.get_running_loop()
        try:
            fresh = await loop.run_in_executor(_REHASHING, hash_password, password)
            await self.store.set_password(address, fresh, scram)
        except Exception as exc:  # the login itself succeeded; the old hash still works
            log("auth.rehash_failed", user=address, error=str(exc))
        else:
            log("auth.rehashed", user=address)

    async def scram_credentials(
        self, ip: str, authcid: str
    ) -> tuple[ScramCredentials | None, str | None]:
        """Stored SCRAM credentials; dummy ones for unknown or throttled accounts (fail later)."""
        account = self._account(authcid)
        if await self.is_blocked(ip, account):
            return _DUMMY_SCRAM, None
        user = await self.store.get_user(account)
        if user is None or not user.scram:
            return _DUMMY_SCRAM, None
        return ScramCredentials.from_string(user.scram), user.address

    async def failed(self, ip: str, authcid: str, service: str, reason: str) -> None:
        """Log one failed login and wait; count it unless the client was refused already.

        A refused attempt is not a new failure: otherwise an attacker who keeps trying
        would keep the block, and the account's count, alive for ever.
        """
        account = self._account(authcid)
        counts = await self.failures(ip, account)
        if self.throttle.blocks(counts):
            reason = "throttled"
        else:
            counts = await self._record_failure(ip, account)
        log("auth.failed", service=service, ip=ip, user=account, reason=reason)
        delay = self.throttle.delay(counts)
        if delay > 0:
            await asyncio.sleep(delay)

    def succeeded(self, ip: str, user: str, service: str) -> None:
        """Log one successful login (the SCRAM path: its proof is checked in the core)."""
        log("auth.ok", service=service, ip=ip, user=user)
        if self.shared is None:
            self.throttle.record_success(ip, self._account(user))
            return
        task = asyncio.ensure_future(self._forgive_later(ip, self._account(user)))
        self._forgiving.add(task)
        task.add_done_callback(self._forgiving.discard)

    async def _forgive_later(self, ip: str, account: str) -> None:
        try:
            await self._forgive(ip, account)
        except Exception as exc:  # the login succeeded; the failures age out on their own
            log("auth.forgive_failed", ip=ip, user=account, error=str(exc))
