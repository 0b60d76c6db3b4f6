"""Small shared helpers: atomic file writes, record readers, dataclass configs."""
