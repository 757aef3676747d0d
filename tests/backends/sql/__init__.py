"""SQLStorage only: URLs, schema, transactions, LISTEN/NOTIFY wake-ups, processes over one store."""
