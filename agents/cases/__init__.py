"""Cases room: case store, SLA calendar, rules and notifiers."""
