"""Label Studio ML backend protocol: /setup, /predict, /webhook, /health and friends."""
