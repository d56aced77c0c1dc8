"""Mail authentication checks: SPF, DKIM, DMARC, DNS blocklists, greylisting."""
