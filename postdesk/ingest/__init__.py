"""Mail in: IMAP and file sources, the raw store, parsing and ticket threading."""
