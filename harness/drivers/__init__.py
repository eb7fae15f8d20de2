"""labgrid resources and drivers of the harness; importing registers them."""
