"""Everything the API measures: `/api/metrics` numbers (`stats`), Prometheus exposition
(`prometheus`) and the aggregate SQL both read (`queries`). Kept together so a new metric has one home."""
