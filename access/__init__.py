"""Who may call the API, and how often: API keys and rate limits."""
