"""Mail out: templates (English and Persian), composing, the outbox and SMTP sending."""
