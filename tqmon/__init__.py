"""tqmon: the incident dashboard for tqcore clusters (Textual)."""
