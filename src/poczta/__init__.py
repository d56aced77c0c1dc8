"""poczta: an all-in-one, secure mail server (SMTP, submission, IMAP, POP3, SPF/DKIM/DMARC)."""

__version__ = "0.1.0"
