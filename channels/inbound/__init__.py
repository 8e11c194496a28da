"""What arrives: replies and bounces, read from raw messages and recorded through the ledger."""
