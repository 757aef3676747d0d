"""The core library through its public API: queue, codec, guards, typing, keywords, lifecycle."""
