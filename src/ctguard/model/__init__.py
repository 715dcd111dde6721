"""Pure models: take readings as values, never read the host."""
