"""End-to-end acceptance suite: tqcore checked against Celery's documented semantics."""
