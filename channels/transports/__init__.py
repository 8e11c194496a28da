"""One module per transport: SMTP (with the MIME builder), Twilio, Telegram, call tasks, and the dev outboxes."""
