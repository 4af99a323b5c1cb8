"""End-to-end jobs built from the stages below (the README's main command)."""
