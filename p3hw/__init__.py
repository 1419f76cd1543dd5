"""p3hw — Protected Point to Point (P3) site-to-site encrypted gateway."""

__version__ = "0.1.0"
