"""The customer base: tables, database access, import and the contact history."""
