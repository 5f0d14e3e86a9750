"""Visual Turing Test: a reader study of real and synthetic images (create, invite, serve, report)."""
