"""Mail for the benchmarks: POP3's plain fixed-size message and IMAP's varied corpus.

The IMAP corpus is what a real mailbox looks like to a server that indexes it: From,
To and Cc with display names (some as RFC 2047 encoded-words, in UTF-8 and ISO-8859-2),
subjects of varying length, dates spread over two years in several time zones,
Message-ID, reply threads (In-Reply-To, References), and a mix of text/plain (7bit,
8bit and quoted-printable), multipart/alternative (text and HTML) and multipart/mixed
with a base64 attachment. It is generated from a seed, so every server gets the same
bytes, and each message remembers what a server's SEARCH must find in it (its decoded
subject, its decoded body text, its internal date and flags).

Standard library only (``email.header`` does the encoded-words, ``quopri`` the
quoted-printable), so a benchmark can build the corpus before poczta is importable.
"""

from __future__ import annotations

import base64
import quopri
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.header import Header

DOMAIN = "example.test"
SPAN_DAYS = 730  # the dates of every mailbox spread over two years
FIRST_DAY = datetime(2023, 1, 2, tzinfo=UTC)

#: The words the SEARCH scenarios look for. Neither occurs in the filler vocabularies
#: below, so a message contains one only where the generator put it on purpose.
SUBJECT_WORD = "budget"
BODY_WORD = "lighthouse"


def make_message(n: int, size: int) -> bytes:
    """POP3's message `n`: a few headers and `size` body bytes in 76-column lines, CRLF."""
    head = (
        f"From: sender{n % 97}@bench.test\r\nTo: user@{DOMAIN}\r\n"
        f"Subject: benchmark message {n}\r\nMessage-ID: <{n}.bench@bench.test>\r\n"
        "Date: Mon, 02 Jan 2023 10:00:00 +0000\r\n\r\n"
    )
    line = (f"{n:08d} " + "abcdefghijklmnopqrstuvwxyz0123456789" * 2)[:76] + "\r\n"
    body = (line * (size // len(line) + 1))[:size]
    return (head + body.rsplit("\r\n", 1)[0] + "\r\n").encode()


# --------------------------------------------------------------------------- vocabularies


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


PEOPLE = [
    ("Anna Kowalska", "anna.kowalska@firma.example"),
    ("Łukasz Wróbel", "lukasz@wrobel.example"),
    ("Zofia Żółtowska", "zofia@poczta.example"),
    ("John Smith", "john.smith@corp.example"),
    ("Marie-Hélène Dupont", "mh.dupont@univ.example"),
    ("Grzegorz Brzęczyszczykiewicz", "gb@chrzaszczyrzewoszyce.example"),
    ("Priya Raman", "priya@lab.example"),
    ("Jürgen Müller", "jm@werk.example"),
    ("Chen Wei", "wei.chen@net.example"),
    ("Ola Nordmann", "ola@fjord.example"),
    ("Support Team", "support@service.example"),
    ("GitHub", "notifications@forge.example"),
    ("Newsletter Tygodnik", "news@tygodnik.example"),
    ("Ewa Dąbrowska-Nowak", "ewa@dabrowska.example"),
    ("Björn Åström", "bjorn@astrom.example"),
    ("", "noreply@shop.example"),
]
OWNER = ("Big User", f"big@{DOMAIN}")
SUBJECT_WORDS = _words(
    "meeting notes agenda review release plan draft update minutes weekly quarterly "
    "invoice order shipment delivery question proposal contract schedule travel "
    "photos holiday dinner project deadline status report server outage incident "
    "backup migration upgrade roadmap feedback survey conference tickets reminder "
    "spotkanie faktura projekt urlop zamówienie pytanie raport termin kolacja wyjazd"
)
BODY_WORDS = _words(
    "the a of to and in is it that for on with as this we be at by not or have from "
    "please find attached see below thanks regards let me know if you can when will "
    "should could would about our next week month year team work time call send "
    "change version issue test build result data file list point idea need help "
    "morning evening today tomorrow later soon maybe sure great fine good problem "
    "dzień dobry dziękuję pozdrawiam proszę spotkanie jutro wczoraj sprawa termin "
    "zażółć gęślą jaźń łódź źródło właśnie"
)
LISTS = ["<dev.lists.example>", "<announce.lists.example>", "<users.lists.example>"]
ZONES = [timezone(timedelta(hours=h)) for h in (0, 1, 2, -5, -8, 9)]
ATTACHMENTS = [
    ("application/pdf", "report.pdf"),
    ("image/png", "photo.png"),
    ("application/zip", "archive.zip"),
    ("application/octet-stream", "data.bin"),
]


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class CorpusMessage:
    """One message and what a SEARCH must find in it."""

    data: bytes  # CRLF line ends
    internal_date: datetime  # UTC, between 09:00 and 15:00 so no time zone moves its day
    flags: frozenset[str]
    subject: str  # decoded
    text: str  # the decoded text of its text parts, lower-cased


class Corpus:
    """The messages of every mailbox, generated on demand and kept once made.

    A mailbox is a `stream` of `count` messages: the same stream and count give the same
    messages (several users can hold copies of one mailbox), and a message may reply to
    an earlier one of its stream.
    """

    def __init__(self, seed: int = 1) -> None:
        self.seed = seed
        self._made: dict[tuple[str, int], list[CorpusMessage]] = {}

    def mailbox(self, stream: str, count: int) -> list[CorpusMessage]:
        made = self._made.get((stream, count))
        if made is None:
            threads: list[tuple[str, str, str]] = []  # message id, references, base subject
            made = [self._generate(stream, n, count, threads) for n in range(count)]
            self._made[(stream, count)] = made
        return made

    def _generate(
        self, stream: str, n: int, count: int, threads: list[tuple[str, str, str]]
    ) -> CorpusMessage:
        rng = random.Random(f"{self.seed}/{stream}/{n}")
        day = n * SPAN_DAYS // max(1, count)
        when = FIRST_DAY + timedelta(days=day, hours=9, seconds=rng.randrange(6 * 3600))
        msgid = f"<{n}.{rng.getrandbits(40):010x}.{stream.lower()}@bench.example>"
        subject, refs, parent = self._subject_and_thread(rng, threads)
        threads.append((msgid, refs, subject.removeprefix("Re: ")))
        kind = rng.random()
        text = _paragraphs(
            rng, rng.randrange(600, 1300) if kind >= 0.85 else rng.randrange(1400, 3000)
        )
        if rng.random() < 0.04:
            text += f"\nThe {BODY_WORD} meeting is on Friday, see you there.\n"
        head = _headers(rng, when, msgid, subject, parent, refs)
        if kind < 0.6:
            head_tail, body = _plain_part(rng, text)
        elif kind < 0.85:
            head_tail, body = _alternative(rng, text)
        else:
            head_tail, body = _mixed(rng, text)
        data = (head + head_tail + "\n" + body).replace("\n", "\r\n").encode()
        return CorpusMessage(
            data=data,
            internal_date=when,
            flags=_flags(rng, n, count, bool(parent)),
            subject=subject,
            text=text.lower(),
        )

    @staticmethod
    def _subject_and_thread(
        rng: random.Random, threads: list[tuple[str, str, str]]
    ) -> tuple[str, str, str]:
        """(subject, References, In-Reply-To): a reply to a recent message or a new topic."""
        if threads and rng.random() < 0.35:
            parent_id, parent_refs, base = threads[-1 - rng.randrange(min(50, len(threads)))]
            refs = " ".join([*parent_refs.split()[-9:], parent_id])
            return "Re: " + base, refs, parent_id
        words = rng.sample(SUBJECT_WORDS, rng.randrange(2, 7))
        if rng.random() < 0.05:
            words.insert(rng.randrange(len(words) + 1), SUBJECT_WORD)
        subject = " ".join(words).capitalize()
        if rng.random() < 0.3:
            subject += f" #{rng.randrange(1000, 99999)}"
        return subject, "", ""


def _flags(rng: random.Random, n: int, count: int, reply: bool) -> frozenset[str]:
    flags = set()
    if rng.random() < (0.9 if n < count * 0.9 else 0.3):
        flags.add("\\Seen")
    if rng.random() < 0.05:
        flags.add("\\Flagged")
    if reply and rng.random() < 0.3:
        flags.add("\\Answered")
    return frozenset(flags)


def _address(rng: random.Random, person: tuple[str, str]) -> str:
    name, addr = person
    if not name:
        return addr
    if name.isascii():
        return f'"{name}" <{addr}>' if rng.random() < 0.5 else f"{name} <{addr}>"
    charset = "utf-8" if rng.random() < 0.7 else "iso-8859-2"
    try:
        encoded = Header(name, charset).encode()
    except UnicodeEncodeError:  # not every name fits ISO-8859-2
        encoded = Header(name, "utf-8").encode()
    return f"{encoded} <{addr}>"


def _encoded_subject(rng: random.Random, subject: str) -> str:
    if subject.isascii() and rng.random() < 0.9:
        return subject
    return Header(subject, "utf-8" if rng.random() < 0.5 else "iso-8859-2").encode()


def _headers(
    rng: random.Random, when: datetime, msgid: str, subject: str, parent: str, refs: str
) -> str:
    sender = rng.choice(PEOPLE)
    sent = when.astimezone(rng.choice(ZONES)) - timedelta(seconds=rng.randrange(5, 600))
    lines = [
        f"Received: from mail.{sender[1].split('@')[1]} (mail.{sender[1].split('@')[1]}"
        f" [192.0.2.{rng.randrange(1, 255)}])\n\tby mx.{DOMAIN} with ESMTPS id"
        f" {rng.getrandbits(48):012X}\n\tfor <{OWNER[1]}>; {_rfc5322(when)}",
        f"Date: {_rfc5322(sent)}",
        f"From: {_address(rng, sender)}",
        "To: "
        + ", ".join(_address(rng, p) for p in [OWNER, *rng.sample(PEOPLE, rng.randrange(2))]),
    ]
    if rng.random() < 0.3:
        cc = rng.sample(PEOPLE, rng.randrange(1, 4))
        lines.append("Cc: " + ",\n ".join(_address(rng, p) for p in cc))
    lines += [f"Subject: {_encoded_subject(rng, subject)}", f"Message-ID: {msgid}"]
    if parent:
        lines += [f"In-Reply-To: {parent}", "References: " + "\n ".join(refs.split())]
    if rng.random() < 0.2:
        lines.append(f"List-Id: {rng.choice(LISTS)}")
    if rng.random() < 0.5:
        lines.append(f"X-Mailer: {rng.choice(['Thunderbird 115.3', 'Evolution 3.46', 'K-9'])}")
    lines.append("MIME-Version: 1.0")
    return "\n".join(lines) + "\n"


def _rfc5322(when: datetime) -> str:
    return when.strftime("%a, %d %b %Y %H:%M:%S %z")


def _paragraphs(rng: random.Random, size: int) -> str:
    """Filler text of about `size` characters in lines of at most 76."""
    lines, line, total = [], "", 0
    while total < size:
        word = rng.choice(BODY_WORDS)
        if len(line) + len(word) + 1 > 72:
            lines.append(line)
            total += len(line) + 1
            line = ""
            if rng.random() < 0.15:
                lines.append("")
        line = f"{line} {word}" if line else word.capitalize()
    lines.append(line + ".")
    return "\n".join(lines) + "\n"


def _plain_part(rng: random.Random, text: str) -> tuple[str, str]:
    """Headers and body of a text/plain part: 7bit, 8bit or quoted-printable."""
    if text.isascii():
        return (
            'Content-Type: text/plain; charset="us-ascii"\nContent-Transfer-Encoding: 7bit\n',
            text,
        )
    if rng.random() < 0.5:
        return "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n", text
    qp = quopri.encodestring(text.encode()).decode("ascii")
    return (
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n",
        qp,
    )


def _boundary(rng: random.Random) -> str:
    return f"=_bench_{rng.getrandbits(64):016x}"


def _alternative(rng: random.Random, text: str) -> tuple[str, str]:
    b = _boundary(rng)
    plain_head, plain = _plain_part(rng, text)
    html = (
        "<html><body>\n"
        + "".join(f"<p>{para}</p>\n" for para in text.split("\n\n") if para.strip())
        + "</body></html>\n"
    )
    html_head, html_body = _plain_part(rng, html)
    html_head = html_head.replace("text/plain", "text/html")
    body = (
        f"This is a multi-part message in MIME format.\n--{b}\n{plain_head}\n{plain}"
        f"--{b}\n{html_head}\n{html_body}--{b}--\n"
    )
    return f'Content-Type: multipart/alternative; boundary="{b}"\n', body


def _mixed(rng: random.Random, text: str) -> tuple[str, str]:
    b = _boundary(rng)
    plain_head, plain = _plain_part(rng, text)
    kind, name = rng.choice(ATTACHMENTS)
    blob = base64.encodebytes(rng.randbytes(rng.randrange(900, 1800))).decode("ascii")
    body = (
        f'--{b}\n{plain_head}\n{plain}--{b}\nContent-Type: {kind}; name="{name}"\n'
        f'Content-Disposition: attachment; filename="{name}"\n'
        f"Content-Transfer-Encoding: base64\n\n{blob}--{b}--\n"
    )
    return f'Content-Type: multipart/mixed; boundary="{b}"\n', body
