"""Outgoing mail: the outbox (outbox.py), sending it over SMTP (smtp.py, the only module
that speaks SMTP), the mail templates in English and Persian (templates.py) and the
`postdesk outbox` commands (cli.py)."""
