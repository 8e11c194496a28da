"""Documents from templates: commercial proposals and contracts (.docx) filled from the customer base."""
