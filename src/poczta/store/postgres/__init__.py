"""The PostgreSQL backend of the mail store: connections (`connect`), the schema and its
migrations (`migrate`, `migrations/`)."""
