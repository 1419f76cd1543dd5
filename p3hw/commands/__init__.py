"""One module per p3hw subcommand: add_arguments(parser) and run(args)."""
