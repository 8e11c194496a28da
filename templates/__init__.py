"""Message templates shipped with touchflow (package data: ``touchflow.shipped.templates``)."""
