"""How a running postdesk is doing: `postdesk status`, `postdesk doctor` and the metrics."""
