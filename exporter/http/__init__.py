"""HTTP side: server, /metrics exposition and collectors, JSON API, webhook, web config."""
