"""touchflow: an omnichannel outreach engine with a complete contact history."""

__version__ = "0.1.0"
