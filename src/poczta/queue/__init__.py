"""The outbound queue: delivery of queued remote recipients (the MX plan so far, in `mx`)."""
