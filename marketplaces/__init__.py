"""The marketplaces: their image rules and the options that meet them."""
