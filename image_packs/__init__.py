"""Marketplace image packs: a request's outputs as one ZIP, named as a marketplace's bulk upload wants them."""
