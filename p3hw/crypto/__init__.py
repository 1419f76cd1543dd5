"""Key schedule, PRFs, key arrays and key-generation dispatch."""
