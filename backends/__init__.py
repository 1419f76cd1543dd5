"""Hardware and kernel backends, one folder each (DESIGN.md §5); installed as p3hw.backends."""
