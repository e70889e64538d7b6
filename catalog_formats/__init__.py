"""Catalog files as platforms export them: Shopify, WooCommerce and Google Merchant Center."""
