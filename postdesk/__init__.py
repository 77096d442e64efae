"""postdesk: an email helpdesk engine.

Mail comes in over IMAP, becomes tickets, is triaged by a model trained on the team's own
history, and agents answer from their own mail client.
"""

__version__ = "0.1.0"
