"""When: campaign and reminder flows (Prefect), thin over ``flows.engine``'s plain functions."""
