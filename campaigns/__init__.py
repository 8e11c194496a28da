"""Campaign and reminder specs shipped with touchflow (package data: ``touchflow.shipped.campaigns``)."""
