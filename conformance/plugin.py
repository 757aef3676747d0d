"""pytest plugin entry point of the conformance suite (adds nothing unless asked for)."""
