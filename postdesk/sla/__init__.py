"""Service levels: due times for the first response and the resolution, in business time.

- `calendar`: business-time arithmetic in a team's calendar (week, holidays, time zone).
- `clock`: a ticket's SLA state from its history (pure; no database).
- `view`: reading that state for a ticket from the database (`tickets show`).
"""
